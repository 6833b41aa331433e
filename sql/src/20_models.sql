-- The featurizer model registry.

CREATE TABLE imgfeat.models (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    architecture    text NOT NULL,
    input_width     integer NOT NULL CHECK (input_width > 0),
    input_height    integer NOT NULL CHECK (input_height > 0),
    feature_dim     integer NOT NULL CHECK (feature_dim > 0),
    preprocessing   jsonb NOT NULL,
    weights_origin  text NOT NULL CHECK (weights_origin IN ('imagenet', 'synthetic', 'custom')),
    input_name      text NOT NULL,
    output_name     text NOT NULL,
    fixed_batch     boolean NOT NULL DEFAULT false,
    sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes      bigint NOT NULL CHECK (size_bytes > 0),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    feature_layer   text NOT NULL DEFAULT 'pooled' CHECK (feature_layer IN ('pooled', 'spatial')),
    precision       text NOT NULL DEFAULT 'fp32' CHECK (precision IN ('fp32', 'bf16', 'int8')),
    engines         text[] NOT NULL DEFAULT '{onnxruntime}'
        CONSTRAINT models_engines_check CHECK (pg_catalog.cardinality(engines) >= 1 AND engines <@ '{onnxruntime,openvino}'::text[]),
    CONSTRAINT models_precision_engines_check CHECK ((precision = 'fp32' AND engines = '{onnxruntime}')
                                                     OR (precision = 'bf16' AND engines = '{openvino}')
                                                     OR precision = 'int8')
);
COMMENT ON TABLE imgfeat.models IS
'Registered featurizer models (ONNX feature extractors). input_width x input_height is the NCHW input size in pixels; feature_dim the length of the real[] feature vector; preprocessing the jsonb spec (resize, resize_size, interpolation, channel_order, scale, mean, std, pad_color, background); weights_origin imagenet (pre-trained: a catalog download whose checksum was verified, or vouched for by who registered it) | synthetic (seeded, for tests and demos) | custom (anything else); feature_layer pooled (the network''s own feature layer: global average pool, AlexNet fc7; the default) | spatial (the last feature map averaged to 2x2 and flattened channel-major, 4x its channels: keeps where things are in the image, e.g. which way a face looks); sha256 of the stored ONNX bytes, verified when a backend loads the model; precision fp32 (the graph as registered, run by onnxruntime''s CPU execution provider) | bf16 (the same graph run by OpenVINO with bf16 weights and activations, fp32 accumulation: imgfeat.register_bf16_model) | int8 (a QDQ graph: imgfeat.quantize_model); engines: the engines that may run it, in order of preference, the first one the server has is used (onnxruntime: its CPU execution provider; openvino: OpenVINO''s CPU runtime, through onnxruntime''s OpenVINO execution provider plugin where it serves the CPU, else OpenVINO''s own API); fp32 runs on {onnxruntime}, bf16 on {openvino} only, int8 on {openvino,onnxruntime} by default. A model no engine of the server can run fails with SQLSTATE 0A000 naming what is missing; it never runs at another precision. The bytes themselves live in imgfeat.model_chunks; see imgfeat.model_onnx(name).';

CREATE TABLE imgfeat.model_chunks (
    model_name  text NOT NULL REFERENCES imgfeat.models (name) ON DELETE CASCADE ON UPDATE CASCADE,
    chunk_no    integer NOT NULL CHECK (chunk_no >= 0),
    data        bytea NOT NULL,
    PRIMARY KEY (model_name, chunk_no)
);
ALTER TABLE imgfeat.model_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE imgfeat.model_chunks IS
'The ONNX bytes of each model in chunks of 8 MiB, in chunk_no order (stored uncompressed: weights do not compress).';

SELECT pg_catalog.pg_extension_config_dump('imgfeat.models', '');
SELECT pg_catalog.pg_extension_config_dump('imgfeat.model_chunks', '');

CREATE FUNCTION imgfeat.register_model(
    name text,
    onnx bytea,
    architecture text DEFAULT NULL,
    weights_origin text DEFAULT 'custom',
    preprocessing jsonb DEFAULT NULL,
    output_name text DEFAULT NULL,
    feature_dim integer DEFAULT NULL,
    replace boolean DEFAULT false,
    feature_layer text DEFAULT 'pooled'
) RETURNS imgfeat.models
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].register_model(plpy, name, onnx, architecture, weights_origin, preprocessing, output_name, feature_dim, replace, feature_layer)
$$;
COMMENT ON FUNCTION imgfeat.register_model(text, bytea, text, text, jsonb, text, integer, boolean, text) IS
'Registers an ONNX image model as a featurizer and returns its imgfeat.models row. onnx: the model file''s bytes (any ONNX image model with an NCHW float input). The graph is cut at its feature layer: output_name when given (a tensor name), else automatically at the input of the final classifier Gemm/MatMul; the output is flattened to [N, feature_dim]. architecture: resnet18 | resnet50 | resnet101 | alexnet | efficientnet_lite0 gives that network''s preprocessing and feature_dim; else ''custom''. preprocessing: jsonb spec (default: torchvision ImageNet at the graph''s input size). feature_dim: checked against the graph when given. weights_origin: imagenet | synthetic | custom (the default; say imagenet only for weights known to be pre-trained). feature_layer: pooled (default) | spatial: what the graph''s output is, recorded in imgfeat.models; for a built-in architecture it sets the expected feature_dim (4x the last feature map''s channels for spatial). Errors: not ONNX, no image-shaped input, feature_dim contradicted, name taken without replace => true. The registry is unchanged on error.';

CREATE FUNCTION imgfeat.register_large_model(
    name text,
    onnx_large_object oid,
    architecture text DEFAULT NULL,
    weights_origin text DEFAULT 'custom',
    preprocessing jsonb DEFAULT NULL,
    output_name text DEFAULT NULL,
    feature_dim integer DEFAULT NULL,
    replace boolean DEFAULT false,
    feature_layer text DEFAULT 'pooled'
) RETURNS imgfeat.models
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].register_model(plpy, name, int(onnx_large_object), architecture, weights_origin, preprocessing, output_name, feature_dim, replace, feature_layer)
$$;
COMMENT ON FUNCTION imgfeat.register_large_model(text, oid, text, text, jsonb, text, integer, boolean, text) IS
'As imgfeat.register_model, for a model uploaded as a large object (lo_create + lo_put in chunks; the caller needs SELECT on it, and unlinks it afterwards): the bytes never travel as one bind parameter, so registering a model of hundreds of MB holds about twice its size in the backend instead of four times. The imgfeat CLI uses it for models over 32 MiB.';

CREATE FUNCTION imgfeat.drop_model(name text) RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH gone AS (DELETE FROM imgfeat.models m WHERE m.name = drop_model.name RETURNING 1)
    SELECT count(*) > 0 FROM gone;
END;
COMMENT ON FUNCTION imgfeat.drop_model(text) IS
'Removes a model and its stored bytes; true if it existed. Features already computed with it stay in their tables.';

CREATE FUNCTION imgfeat.model_onnx(name text) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT string_agg(c.data, ''::bytea ORDER BY c.chunk_no)
    FROM imgfeat.model_chunks c WHERE c.model_name = model_onnx.name;
END;
COMMENT ON FUNCTION imgfeat.model_onnx(text) IS
'The stored ONNX bytes of a model (the feature extractor as registered), or NULL if unknown. Holds the whole model in memory: for export, not for featurizing.';

CREATE FUNCTION imgfeat.register_synthetic_model(
    architecture text,
    name text DEFAULT NULL,
    seed integer DEFAULT 0,
    replace boolean DEFAULT false,
    feature_layer text DEFAULT 'pooled'
) RETURNS imgfeat.models
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].register_synthetic_model(plpy, architecture, name, seed, replace, feature_layer)
$$;
COMMENT ON FUNCTION imgfeat.register_synthetic_model(text, text, integer, boolean, text) IS
'Builds architecture (resnet18 | resnet50 | resnet101 | alexnet: torchvision''s exact topology; efficientnet_lite0: TF EfficientNet-Lite0''s) with deterministic seeded SYNTHETIC weights (not pre-trained: for tests and offline demos only) and registers it under name (default: the architecture) with weights_origin = ''synthetic''. feature_layer: pooled (the default: 512 features for resnet18, 2048 for resnet50 and resnet101, 4096 for alexnet (fc7), 1280 for efficientnet_lite0) | spatial (the last feature map averaged to 2x2 and flattened channel-major: 2048 features for resnet18, 8192 for resnet50 and resnet101, 1024 for alexnet (pool5), 5120 for efficientnet_lite0). Featurizing with it raises a NOTICE once per session. Takes seconds (resnet18) to a minute (alexnet, resnet101).';
