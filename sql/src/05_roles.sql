-- Roles. They are cluster-wide: created here if missing, never dropped with the extension.
--
-- imgfeat_user:        featurizes images given as bytes, trains, predicts and evaluates. Analysts get this.
-- imgfeat_file_reader: also featurizes image files under imgfeat.image_root (and nowhere else).
-- imgfeat_admin:       also registers and drops featurizer models and manages every classifier.
-- imgfeat_definer:     NOLOGIN, no members: owns the three SECURITY DEFINER wrappers that read a
--                      catalog row and hand it to an internal function (imgfeat.featurize_image,
--                      imgfeat.predict, imgfeat.predict_proba); grant it to no one.

-- Roles of these names made before imgfeat was installed (by a CREATEROLE user, say) would own
-- or write everything imgfeat trusts, so one that exists is checked first, and the install
-- refused (SQLSTATE 42501, naming what is wrong) unless it is as imgfeat would make it:
-- imgfeat_definer NOLOGIN NOINHERIT, no members (nor ADMIN holders), member of no role; each
-- role NOLOGIN, not SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS. (Members of
-- imgfeat_user, imgfeat_file_reader and imgfeat_admin are the DBA's grants, kept.)
DO $check_roles$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT a.rolname, pg_catalog.concat_ws(', ',
                   CASE WHEN a.rolcanlogin THEN 'it can log in' END,
                   CASE WHEN a.rolsuper THEN 'it is a superuser' END,
                   CASE WHEN a.rolcreaterole THEN 'it has CREATEROLE' END,
                   CASE WHEN a.rolcreatedb THEN 'it has CREATEDB' END,
                   CASE WHEN a.rolreplication THEN 'it has REPLICATION' END,
                   CASE WHEN a.rolbypassrls THEN 'it has BYPASSRLS' END,
                   CASE WHEN a.rolname = 'imgfeat_definer' AND a.rolinherit THEN 'it has INHERIT' END,
                   CASE WHEN a.rolname = 'imgfeat_definer' AND EXISTS (
                            SELECT FROM pg_catalog.pg_auth_members m WHERE m.roleid = a.oid) THEN 'it has members' END,
                   CASE WHEN a.rolname = 'imgfeat_definer' AND EXISTS (
                            SELECT FROM pg_catalog.pg_auth_members m WHERE m.member = a.oid) THEN 'it is a member of a role' END
               ) AS wrong
          FROM pg_catalog.pg_roles a
         WHERE a.rolname IN ('imgfeat_user', 'imgfeat_file_reader', 'imgfeat_admin', 'imgfeat_definer')
    LOOP
        IF r.wrong <> '' THEN
            RAISE EXCEPTION 'imgfeat: the existing role % is not as imgfeat makes it: %', r.rolname, r.wrong
                USING ERRCODE = '42501',
                      HINT = 'A role of that name made by someone else would own or write what imgfeat trusts. Check who made it; fix it (ALTER ROLE ... NOLOGIN ..., REVOKE) or drop it, then install again.';
        END IF;
    END LOOP;
END
$check_roles$;

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'imgfeat_user') THEN
        CREATE ROLE imgfeat_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'imgfeat_file_reader') THEN
        CREATE ROLE imgfeat_file_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'imgfeat_admin') THEN
        CREATE ROLE imgfeat_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'imgfeat_definer') THEN
        CREATE ROLE imgfeat_definer NOLOGIN NOINHERIT;
    END IF;
    IF NOT pg_catalog.pg_has_role('imgfeat_admin', 'imgfeat_user', 'MEMBER') THEN
        GRANT imgfeat_user TO imgfeat_admin;
    END IF;
    IF NOT pg_catalog.pg_has_role('imgfeat_file_reader', 'imgfeat_user', 'MEMBER') THEN
        GRANT imgfeat_user TO imgfeat_file_reader;
    END IF;
END
$roles$;
COMMENT ON ROLE imgfeat_user IS 'imgfeat: featurize images given as bytes, train, predict and evaluate classifiers (GRANT imgfeat_user TO analyst). Reads no files on the server.';
COMMENT ON ROLE imgfeat_file_reader IS 'imgfeat: everything imgfeat_user may do, plus featurizing image files under imgfeat.image_root and nowhere else (GRANT imgfeat_file_reader TO etl_role).';
COMMENT ON ROLE imgfeat_admin IS 'imgfeat: everything imgfeat_user may do, plus registering and dropping featurizer models and managing every classifier.';
COMMENT ON ROLE imgfeat_definer IS 'imgfeat: owns the SECURITY DEFINER wrappers imgfeat.featurize_image, imgfeat.predict and imgfeat.predict_proba, which read a catalog row and pass it to an internal function no one else may call. NOLOGIN; grant it to no one.';
