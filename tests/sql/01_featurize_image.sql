-- The foundation's SQL surface, end to end (pg_regress).
\set VERBOSITY terse
CREATE EXTENSION imgfeat CASCADE;
SELECT (imgfeat.python_info() ->> 'imgfeat') IS NOT NULL AS has_version;
SELECT name, architecture, input_width, input_height, feature_dim, weights_origin
  FROM imgfeat.register_synthetic_model('resnet18');
-- a 2x2 grey PGM image
SELECT array_length(imgfeat.featurize_image('\x50350a3220320a3235350a00408000'::bytea, 'resnet18'), 1) AS dims;
SELECT imgfeat.featurize_image(NULL, 'resnet18') IS NULL AS null_in_null_out;
SELECT imgfeat.featurize_image('\x00'::bytea, 'resnet18');
SELECT imgfeat.featurize_image('\x50350a3220320a3235350a00408000'::bytea, 'nope');
SELECT imgfeat.drop_model('resnet18') AS dropped;
SELECT count(*) AS chunks_left FROM imgfeat.model_chunks;
DROP EXTENSION imgfeat;
