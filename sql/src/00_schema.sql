-- imgfeat: in-database image featurization (onnxruntime) and classification.
-- This file is assembled by the Makefile from sql/src/*.sql into sql/imgfeat--<version>.sql.
-- Every function pins search_path and names objects schema-qualified.

\echo Use "CREATE EXTENSION imgfeat CASCADE" to load this file. \quit

COMMENT ON SCHEMA imgfeat IS 'imgfeat: image featurization with pre-trained deep networks (onnxruntime, PL/Python) and logistic-regression classifiers';
