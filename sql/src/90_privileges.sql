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
DO $admin$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'imgfeat'::regnamespace
          AND p.proname IN ('register_model', 'register_large_model', 'register_synthetic_model', 'drop_model', 'quantize_model',
                            'register_bf16_model')
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM imgfeat_user', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO imgfeat_admin', f);
    END LOOP;
END
$admin$;

REVOKE ALL ON ALL TABLES IN SCHEMA imgfeat FROM PUBLIC;
GRANT SELECT ON imgfeat.models, imgfeat.model_chunks TO imgfeat_user;
GRANT INSERT, UPDATE, DELETE ON imgfeat.models, imgfeat.model_chunks TO imgfeat_admin;
-- Analysts only read the shared tables: in PostgreSQL, UPDATE or DELETE on a table allows
-- LOCK TABLE ... IN ACCESS EXCLUSIVE MODE, which would stall every other role's work. They
-- write through the SECURITY DEFINER functions of 40_featurize_table.sql and 50_classifiers.sql.
GRANT SELECT ON imgfeat.featurize_errors, imgfeat.featurize_jobs, imgfeat.featurize_progress, imgfeat.classifiers TO imgfeat_user;
GRANT SELECT ON imgfeat.models, imgfeat.model_chunks TO imgfeat_definer;
GRANT SELECT, INSERT, UPDATE, DELETE ON imgfeat.classifiers, imgfeat.featurize_jobs, imgfeat.featurize_errors,
    imgfeat_internal.job_locks TO imgfeat_definer;
GRANT SELECT ON imgfeat_internal.classifier_versions TO imgfeat_user, imgfeat_definer;

-- The definer's write functions (*_definer): owned by imgfeat_definer, each checking the rights
-- of its proven caller (imgfeat_internal.caller()); and their SECURITY INVOKER wrappers, which
-- prove the caller (a row of imgfeat_internal.caller_proofs) and call them. Analysts execute both.
DO $writers$
DECLARE
    f regprocedure;
    definer boolean;
BEGIN
    FOR f, definer IN
        SELECT p.oid::regprocedure, p.prosecdef FROM pg_catalog.pg_proc p
        WHERE (p.pronamespace = 'imgfeat_internal'::regnamespace
               AND p.proname IN ('job_lock_key', 'start_job', 'update_job', 'record_errors', 'clear_errors', 'store_classifier',
                                 'job_lock_key_definer', 'start_job_definer', 'update_job_definer', 'record_errors_definer',
                                 'clear_errors_definer', 'store_classifier_definer', 'drop_classifier_definer'))
           OR (p.pronamespace = 'imgfeat'::regnamespace AND p.proname = 'drop_classifier')
    LOOP
        IF definer THEN
            EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO imgfeat_definer', f);
        END IF;
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO imgfeat_user', f);
    END LOOP;
END
$writers$;
GRANT EXECUTE ON FUNCTION imgfeat_internal.caller(), imgfeat_internal.check_job_rights(name, regclass, regclass) TO imgfeat_definer;
-- Classifiers: everyone with imgfeat_user reads and uses every classifier; only its owner
-- (or imgfeat_admin) replaces or drops it (imgfeat_internal.store_classifier, imgfeat.drop_classifier).
ALTER TABLE imgfeat.classifiers ENABLE ROW LEVEL SECURITY;
CREATE POLICY classifiers_select ON imgfeat.classifiers FOR SELECT USING (true);
CREATE POLICY classifiers_write ON imgfeat.classifiers FOR ALL TO imgfeat_definer USING (true) WITH CHECK (true);

-- Featurize jobs and errors: a role sees those of the tables it may read (and its own jobs);
-- they are written by the backend running the job, through the definer's functions. The
-- progress view applies these policies as the querying role (security_invoker).
ALTER TABLE imgfeat.featurize_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY featurize_jobs_select ON imgfeat.featurize_jobs FOR SELECT
    USING (started_by = current_user OR pg_catalog.has_table_privilege(source, 'SELECT'));
CREATE POLICY featurize_jobs_write ON imgfeat.featurize_jobs FOR ALL TO imgfeat_definer USING (true) WITH CHECK (true);
ALTER VIEW imgfeat.featurize_progress SET (security_invoker = true);
ALTER TABLE imgfeat.featurize_errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY featurize_errors_select ON imgfeat.featurize_errors FOR SELECT
    USING (pg_catalog.has_table_privilege(source, 'SELECT'));
CREATE POLICY featurize_errors_write ON imgfeat.featurize_errors FOR ALL TO imgfeat_definer USING (true) WITH CHECK (true);

-- Proofs of the caller: analysts insert their own (row-level security: role = current_user, this
-- backend, this transaction) and nothing else; the definer reads and deletes those of its backend
-- and transaction. INSERT allows LOCK TABLE only in ROW EXCLUSIVE mode, which blocks no reader.
GRANT INSERT ON imgfeat_internal.caller_proofs TO imgfeat_user;
GRANT SELECT, DELETE ON imgfeat_internal.caller_proofs TO imgfeat_definer;
ALTER TABLE imgfeat_internal.caller_proofs ENABLE ROW LEVEL SECURITY;
CREATE POLICY caller_proofs_prove ON imgfeat_internal.caller_proofs FOR INSERT TO imgfeat_user
    WITH CHECK (role = current_user AND backend_pid = pg_catalog.pg_backend_pid() AND xid = pg_catalog.pg_current_xact_id());
CREATE POLICY caller_proofs_read ON imgfeat_internal.caller_proofs FOR SELECT TO imgfeat_definer
    USING (backend_pid = pg_catalog.pg_backend_pid() AND xid = pg_catalog.pg_current_xact_id());
CREATE POLICY caller_proofs_consume ON imgfeat_internal.caller_proofs FOR DELETE TO imgfeat_definer
    USING (backend_pid = pg_catalog.pg_backend_pid() AND xid = pg_catalog.pg_current_xact_id());
