-- imgfeat: in-database image featurization (onnxruntime) and classification.
-- This file is assembled by the Makefile from sql/src/*.sql into sql/imgfeat--<version>.sql.
-- Every function pins search_path and names objects schema-qualified.

\echo Use "CREATE EXTENSION imgfeat CASCADE" to load this file. \quit

-- CREATE EXTENSION installs into a schema imgfeat that already exists. One made beforehand by
-- another role (a database owner may CREATE SCHEMA) would stay theirs: they could plant
-- functions there that run as every imgfeat user, or swap the schema. So the schema must belong
-- to the role installing imgfeat and hold nothing yet (SQLSTATE 42501 otherwise). The schema
-- imgfeat_internal is made by CREATE SCHEMA below, which fails if it exists.
DO $check_schema$
DECLARE
    ns oid := (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = 'imgfeat');
    holder name := (SELECT pg_catalog.pg_get_userbyid(n.nspowner) FROM pg_catalog.pg_namespace n WHERE n.nspname = 'imgfeat');
BEGIN
    IF holder IS DISTINCT FROM current_user THEN
        RAISE EXCEPTION 'imgfeat: the schema imgfeat belongs to %, not to % who installs imgfeat', holder, current_user
            USING ERRCODE = '42501',
                  HINT = 'A schema imgfeat made by another role would let it change imgfeat''s objects. Drop or rename it (or ALTER SCHEMA imgfeat OWNER TO the installing role, once checked), then install again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_depend d
                WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = ns
                  AND d.classid <> 'pg_catalog.pg_extension'::pg_catalog.regclass) THEN
        RAISE EXCEPTION 'imgfeat: the schema imgfeat already holds objects' USING ERRCODE = '42501',
            HINT = 'Install imgfeat into a new schema: drop or rename the existing one first.';
    END IF;
END
$check_schema$;

COMMENT ON SCHEMA imgfeat IS 'imgfeat: image featurization with pre-trained deep networks (onnxruntime, PL/Python) and logistic-regression classifiers';
