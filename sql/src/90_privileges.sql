-- Privileges (the roles are created in 05_roles.sql).
--
-- Every function runs with the caller's rights (SECURITY INVOKER), except
--   imgfeat_internal.config_settings(), which reads the superuser-only pg_file_settings for imgfeat.*, and
--   imgfeat.featurize_image, imgfeat.predict, imgfeat.predict_proba, owned by imgfeat_definer, the only
--   role that may call the internal functions taking a catalog row.
-- PUBLIC gets nothing: not even USAGE on the schemas.

REVOKE ALL ON SCHEMA imgfeat FROM PUBLIC;
GRANT USAGE ON SCHEMA imgfeat TO imgfeat_user;

REVOKE ALL ON ALL ROUTINES IN SCHEMA imgfeat FROM PUBLIC;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA imgfeat TO imgfeat_user;

-- The internal schema: analysts' PL/Python functions bootstrap the library and read the
-- configuration through it, and jobs take their locks; nothing else is theirs to call.
REVOKE ALL ON SCHEMA imgfeat_internal FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA imgfeat_internal FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA imgfeat_internal FROM PUBLIC;
GRANT USAGE ON SCHEMA imgfeat_internal TO imgfeat_user, imgfeat_definer;
GRANT EXECUTE ON FUNCTION imgfeat_internal.bootstrap(), imgfeat_internal.config_settings() TO imgfeat_user, imgfeat_definer;
GRANT EXECUTE ON FUNCTION
    imgfeat_internal.featurize_image(bytea, imgfeat.models, text, text, text, text, text, text, text),
    imgfeat_internal.cached_pixel_ceiling(),
    imgfeat_internal.classify(real[], text, imgfeat.classifiers, text, text),
    imgfeat_internal.classifier_cached(text, text)
  TO imgfeat_definer;
GRANT USAGE ON SCHEMA imgfeat TO imgfeat_definer;
GRANT SELECT, INSERT ON imgfeat_internal.job_locks TO imgfeat_user;
ALTER TABLE imgfeat_internal.job_locks ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_locks_access ON imgfeat_internal.job_locks FOR ALL
    USING (pg_catalog.has_table_privilege(source, 'SELECT'))
    WITH CHECK (pg_catalog.has_table_privilege(source, 'SELECT'));
DO $admin$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'imgfeat'::regnamespace
          AND p.proname IN ('register_model', 'register_large_model', 'register_synthetic_model', 'drop_model', 'quantize_model')
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM imgfeat_user', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO imgfeat_admin', f);
    END LOOP;
END
$admin$;

REVOKE ALL ON ALL TABLES IN SCHEMA imgfeat FROM PUBLIC;
GRANT SELECT ON imgfeat.models, imgfeat.model_chunks TO imgfeat_user;
GRANT INSERT, UPDATE, DELETE ON imgfeat.models, imgfeat.model_chunks TO imgfeat_admin;
GRANT SELECT, INSERT, DELETE ON imgfeat.featurize_errors TO imgfeat_user;
GRANT SELECT, INSERT, UPDATE ON imgfeat.featurize_jobs TO imgfeat_user;
GRANT SELECT ON imgfeat.featurize_progress TO imgfeat_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON imgfeat.classifiers TO imgfeat_user;
GRANT SELECT ON imgfeat.models, imgfeat.model_chunks, imgfeat.classifiers TO imgfeat_definer;

-- Classifiers: everyone with imgfeat_user reads and uses every classifier; only its owner
-- (or imgfeat_admin) replaces or deletes it, and trained_by is always the role that wrote it.
ALTER TABLE imgfeat.classifiers ENABLE ROW LEVEL SECURITY;
CREATE POLICY classifiers_select ON imgfeat.classifiers FOR SELECT USING (true);
CREATE POLICY classifiers_insert ON imgfeat.classifiers FOR INSERT
    WITH CHECK ((owner = current_user AND trained_by = current_user)
                OR pg_catalog.pg_has_role(current_user, 'imgfeat_admin', 'MEMBER'));
CREATE POLICY classifiers_update ON imgfeat.classifiers FOR UPDATE
    USING (owner = current_user OR pg_catalog.pg_has_role(current_user, 'imgfeat_admin', 'MEMBER'))
    WITH CHECK ((owner = current_user AND trained_by = current_user)
                OR pg_catalog.pg_has_role(current_user, 'imgfeat_admin', 'MEMBER'));
CREATE POLICY classifiers_delete ON imgfeat.classifiers FOR DELETE
    USING (owner = current_user OR pg_catalog.pg_has_role(current_user, 'imgfeat_admin', 'MEMBER'));

-- Featurize jobs and errors: a role sees (and clears) those of the tables it may read; a
-- job's row is written only by the role that runs it. The progress view applies these
-- policies as the querying role (security_invoker).
ALTER TABLE imgfeat.featurize_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY featurize_jobs_select ON imgfeat.featurize_jobs FOR SELECT
    USING (started_by = current_user OR pg_catalog.has_table_privilege(source, 'SELECT'));
CREATE POLICY featurize_jobs_insert ON imgfeat.featurize_jobs FOR INSERT
    WITH CHECK (started_by = current_user AND pg_catalog.has_table_privilege(source, 'SELECT'));
CREATE POLICY featurize_jobs_update ON imgfeat.featurize_jobs FOR UPDATE USING (started_by = current_user);
ALTER VIEW imgfeat.featurize_progress SET (security_invoker = true);
ALTER TABLE imgfeat.featurize_errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY featurize_errors_access ON imgfeat.featurize_errors FOR ALL
    USING (pg_catalog.has_table_privilege(source, 'SELECT'))
    WITH CHECK (pg_catalog.has_table_privilege(source, 'SELECT'));
