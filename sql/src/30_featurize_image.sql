-- Featurizing single images.
--
-- imgfeat.featurize_image is PARALLEL SAFE, so SELECT imgfeat.featurize_image(image) FROM t
-- can run in parallel workers. PL/Python's SPI (plpy.execute, plpy.prepare) opens a
-- subtransaction per call, which PostgreSQL refuses in parallel mode; so the SQL wrapper
-- looks up the model's registry row and reads the session's settings itself, and passes
-- them to the PL/Python function, whose hot path makes no SPI call. A model's bytes come
-- from a verified file cache in the data directory (written at registration and on first
-- load) when SPI is not allowed.

CREATE FUNCTION imgfeat._featurize_image(
    image bytea, model imgfeat.models, model_name text, resize text,
    lib_dir text, max_pixels text, intra_threads text, inter_threads text, cache_size text
) RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 10000
SET search_path = pg_catalog, pg_temp
AS $$
@PARALLEL_PRELUDE@
return GD["imgfeat"].featurize_image(plpy, image, model, model_name, resize, max_pixels, intra_threads, inter_threads, cache_size)
$$;
COMMENT ON FUNCTION imgfeat._featurize_image(bytea, imgfeat.models, text, text, text, text, text, text, text) IS
'Internal: the PL/Python body of imgfeat.featurize_image, given the model''s registry row and the session''s settings so that it needs no SPI (parallel workers).';

CREATE FUNCTION imgfeat.featurize_image(image bytea, model_name text DEFAULT 'resnet18', resize text DEFAULT NULL)
RETURNS real[]
LANGUAGE sql STABLE PARALLEL SAFE COST 10000
SET search_path = pg_catalog, pg_temp
RETURN imgfeat._featurize_image(
    image,
    (SELECT m FROM imgfeat.models m WHERE m.name = featurize_image.model_name),
    model_name, resize,
    pg_catalog.current_setting('imgfeat.python_lib_dir', true),
    pg_catalog.current_setting('imgfeat.max_image_pixels', true),
    pg_catalog.current_setting('imgfeat.intra_op_num_threads', true),
    pg_catalog.current_setting('imgfeat.inter_op_num_threads', true),
    pg_catalog.current_setting('imgfeat.session_cache_size', true));
COMMENT ON FUNCTION imgfeat.featurize_image(bytea, text, text) IS
'The feature vector of one image: real[] of the model''s feature_dim (512 for resnet18, 2048 for resnet50/resnet101, 4096 for alexnet). image: encoded bytes of any format Pillow reads (PNG, JPEG, PGM, GIF, TIFF, BMP, WebP, ...); decoded to 8-bit RGB, resized and normalised as the model''s preprocessing spec says (NCHW float32), run through onnxruntime (the session is cached per connection and model, reloaded when the model''s sha256 or the thread settings change). resize: isocrop | isopad | aniso overrides the spec''s mode. NULL image gives NULL. PARALLEL SAFE: SELECT imgfeat.featurize_image(image) FROM big_table can use parallel workers (one onnxruntime session per worker; imgfeat.intra_op_num_threads threads each). Errors: undecodable bytes (SQLSTATE 22P02, with the reason), more pixels than imgfeat.max_image_pixels (54000), unknown model (42704, listing the registered ones).';
