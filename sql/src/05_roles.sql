-- Roles. They are cluster-wide: created here if missing, never dropped with the extension.
--
-- imgfeat_user:        featurizes images given as bytes, trains, predicts and evaluates. Analysts get this.
-- imgfeat_file_reader: also featurizes image files under imgfeat.image_root (and nowhere else).
-- imgfeat_admin:       also registers and drops featurizer models and manages every classifier.
-- imgfeat_definer:     NOLOGIN, no members: owns the three SECURITY DEFINER wrappers that read a
--                      catalog row and hand it to an internal function (imgfeat.featurize_image,
--                      imgfeat.predict, imgfeat.predict_proba); grant it to no one.

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
