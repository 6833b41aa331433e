-- imgfeat Docker image, first start: register the models baked into the image at build time
-- (docker/bake_models.py wrote the ONNX files and manifest.json; nothing is downloaded here).
-- Run by the postgres image's entrypoint (psql as POSTGRES_USER, a superuser: pg_read_file and
-- pg_read_binary_file need it) in POSTGRES_DB, after 10-imgfeat-extension.sql.
-- The manifest's path is the psql variable imgfeat_manifest (default: the image's); an image
-- built without models has an empty manifest, and a missing manifest registers nothing.
\if :{?imgfeat_manifest}
\else
\set imgfeat_manifest /usr/share/imgfeat/models/manifest.json
\endif

SELECT m.name, m.architecture, m.weights_origin, m.feature_dim, m.size_bytes
FROM pg_catalog.jsonb_array_elements(
         CASE WHEN pg_catalog.pg_stat_file(:'imgfeat_manifest', true) IS NULL THEN '[]'::jsonb
              ELSE pg_catalog.pg_read_file(:'imgfeat_manifest')::jsonb END
     ) WITH ORDINALITY AS e(model, n)
CROSS JOIN LATERAL imgfeat.register_model(
    name           => e.model->>'name',
    onnx           => pg_catalog.pg_read_binary_file(e.model->>'path'),
    architecture   => e.model->>'architecture',
    weights_origin => coalesce(e.model->>'weights_origin', 'custom'),
    preprocessing  => NULLIF(e.model->'preprocessing', 'null'::jsonb),
    output_name    => e.model->>'output_name',
    feature_dim    => (e.model->>'feature_dim')::integer,
    replace        => true
) AS m
ORDER BY e.n;
