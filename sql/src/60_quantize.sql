-- Precision variants of registered fp32 models: int8 (onnxruntime static quantization,
-- calibrated on images the caller names) and bf16 (the same graph, run by OpenVINO in bf16).
-- Server side: imgfeat/db/quantize.py, imgfeat/core/engines.py.

CREATE FUNCTION imgfeat.quantize_model(
    model_name text,
    calibration_source regclass,
    image_column text DEFAULT 'image',
    new_name text DEFAULT NULL,
    calibration_rows integer DEFAULT 64,
    replace boolean DEFAULT false
) RETURNS imgfeat.models
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].quantize_model(plpy, model_name, calibration_source, image_column, new_name,
                                   calibration_rows, replace)
$$;
COMMENT ON FUNCTION imgfeat.quantize_model(text, regclass, text, text, integer, boolean) IS
'Registers an int8 variant of a registered featurizer and returns its imgfeat.models row. onnxruntime static quantization (quantize_static): weights int8 per output channel, activations uint8 per tensor, their ranges calibrated (MinMax) by running the float model over up to calibration_rows (1..4096, default 64) non-NULL images of calibration_source (a table or view; rows evenly spread over it in scan order; pass a view to choose them), decoded with the model''s own preprocessing; undecodable ones are skipped with a NOTICE. image_column: bytea (image bytes) or text (paths under imgfeat.image_root, which needs membership in imgfeat_file_reader or pg_read_server_files). The new entry (new_name, default <model_name>-int8) keeps the base model''s architecture, input size, preprocessing, feature_dim and weights_origin; featurize with it as with any model (imgfeat.featurize_image(image, ''resnet50-int8'')). Its precision is int8 and its engines {openvino,onnxruntime}: OpenVINO''s CPU runtime where the server has it, else onnxruntime''s CPU execution provider (their features agree within the tolerance the tests state). On CPUs with VNNI or AMX it runs several times faster; its features differ slightly from the float model''s (make bench measures both: the README''s Performance section). Takes seconds (resnet18) to about a minute (resnet50). Errors: unknown model (SQLSTATE 42704), a base model that is not fp32 (SQLSTATE 22023), calibration source without images or a bad column (SQLSTATE 22023), new_name taken without replace => true. Runs with the caller''s rights: reading the source needs SELECT on it; registering needs INSERT on imgfeat.models (EXECUTE is revoked from PUBLIC, as for imgfeat.register_model).';
REVOKE EXECUTE ON FUNCTION imgfeat.quantize_model(text, regclass, text, text, integer, boolean) FROM PUBLIC;

CREATE FUNCTION imgfeat.register_bf16_model(
    model_name text,
    new_name text DEFAULT NULL,
    replace boolean DEFAULT false
) RETURNS imgfeat.models
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].register_bf16_model(plpy, model_name, new_name, replace)
$$;
COMMENT ON FUNCTION imgfeat.register_bf16_model(text, text, boolean) IS
'Registers a bf16 variant of the fp32 model model_name and returns its imgfeat.models row: the same ONNX graph under new_name (default <model_name>-bf16) with precision bf16 and engines {openvino}, keeping the base model''s architecture, input size, preprocessing, feature layer, feature_dim and weights_origin. Featurizing with it runs OpenVINO''s CPU runtime with INFERENCE_PRECISION_HINT bf16: weights and activations rounded to bfloat16 (8 significant bits), products accumulated in fp32, on AMX tiles (CPU flag amx_bf16) or AVX-512 BF16 (avx512_bf16); features differ slightly from the fp32 model''s (make bench measures how much: the README''s Performance section). A server without bf16 instructions or without OpenVINO refuses to run it (SQLSTATE 0A000, naming what is missing; a NOTICE says so at registration); it never runs it in fp32 instead. Errors: unknown model (SQLSTATE 42704), a base model that is not fp32 (SQLSTATE 22023), new_name taken without replace => true. Runs with the caller''s rights: needs INSERT on imgfeat.models (EXECUTE is revoked from PUBLIC, as for imgfeat.register_model).';
REVOKE EXECUTE ON FUNCTION imgfeat.register_bf16_model(text, text, boolean) FROM PUBLIC;
