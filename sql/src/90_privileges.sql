-- Privileges. The functions run with the caller's rights (SECURITY INVOKER): using imgfeat
-- needs USAGE on the schema and SELECT on the model registry.
GRANT USAGE ON SCHEMA imgfeat TO PUBLIC;
GRANT SELECT ON imgfeat.models, imgfeat.model_chunks TO PUBLIC;
GRANT SELECT, INSERT, DELETE ON imgfeat.featurize_errors TO PUBLIC;
GRANT SELECT, INSERT, UPDATE ON imgfeat.featurize_jobs TO PUBLIC;
GRANT SELECT ON imgfeat.featurize_progress TO PUBLIC;
REVOKE EXECUTE ON FUNCTION imgfeat.register_model(text, bytea, text, text, jsonb, text, integer, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION imgfeat.register_synthetic_model(text, text, integer, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION imgfeat.drop_model(text) FROM PUBLIC;
