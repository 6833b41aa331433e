-- Featurizing single images.
--
-- imgfeat.featurize_image is PARALLEL SAFE, so SELECT imgfeat.featurize_image(image) FROM t
-- can run in parallel workers. PL/Python's SPI (plpy.execute, plpy.prepare) opens a
-- subtransaction per call, which PostgreSQL refuses in parallel mode; so the SQL wrapper looks
-- up the model's registry row and the configured pixel ceiling itself and passes them to the
-- internal PL/Python function, whose hot path makes no SPI call. The wrapper is SECURITY
-- DEFINER (owner imgfeat_definer) because the internal function trusts the row it is given:
-- no caller can hand it a row of their own. A model's bytes come from a verified file cache in
-- the data directory (written at registration and on first load) when SPI is not allowed.

CREATE FUNCTION imgfeat_internal.featurize_image(
    image bytea, model imgfeat.models, model_name text, resize text,
    max_pixels text, max_pixels_ceiling text, intra_op_threads text, inter_op_threads text, cache_size text
) RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 10000
SET search_path = pg_catalog, pg_temp
AS $$
@PARALLEL_PRELUDE@
return GD["imgfeat"].featurize_image(plpy, image, model, model_name, resize, max_pixels, max_pixels_ceiling,
                                     intra_op_threads, inter_op_threads, cache_size)
$$;
COMMENT ON FUNCTION imgfeat_internal.featurize_image(bytea, imgfeat.models, text, text, text, text, text, text, text) IS
'Internal: the PL/Python body of imgfeat.featurize_image, given the model''s registry row, the configured pixel ceiling and the session''s settings so that it needs no SPI (parallel workers). Executable only by imgfeat_definer, the owner of imgfeat.featurize_image.';

CREATE FUNCTION imgfeat_internal.cached_pixel_ceiling() RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
server = GD.get("imgfeat")
return None if server is None else server.cached_pixel_ceiling()
$$;
COMMENT ON FUNCTION imgfeat_internal.cached_pixel_ceiling() IS
'Internal: the configured imgfeat.max_image_pixels this process has already been given, as ''<key>:<pixels>'' where key is pg_conf_load_time() (epoch seconds, text) when it was read, or NULL; imgfeat.featurize_image uses it only when its key is the current pg_conf_load_time(), else reads the configuration files again (so a lowered ceiling binds backends already running after SELECT pg_reload_conf()). Runs no query.';

CREATE FUNCTION imgfeat.featurize_image(image bytea, model_name text DEFAULT 'resnet18', resize text DEFAULT NULL)
RETURNS real[]
LANGUAGE sql STABLE PARALLEL SAFE COST 10000 SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN imgfeat_internal.featurize_image(
    image,
    (SELECT m FROM imgfeat.models m WHERE m.name = featurize_image.model_name),
    model_name, resize,
    pg_catalog.current_setting('imgfeat.max_image_pixels', true),
    -- The ceiling as <key>:<pixels>, key = when this backend last loaded the configuration
    -- files: the cached ceiling only if it was read since, else the one in the configuration
    -- files (a reload binds backends already running).
    (SELECT k.key || ':' || COALESCE(
                (SELECT pg_catalog.substr(c.c, pg_catalog.length(k.key) + 2)
                   FROM (SELECT imgfeat_internal.cached_pixel_ceiling() AS c) c
                  WHERE pg_catalog.starts_with(c.c, k.key || ':')),
                (SELECT s.setting FROM imgfeat_internal.config_settings() s WHERE s.name = 'imgfeat.max_image_pixels'),
                '')
       FROM (SELECT pg_catalog."extract"('epoch', pg_catalog.pg_conf_load_time())::pg_catalog.text AS key) k),
    pg_catalog.current_setting('imgfeat.intra_op_num_threads', true),
    pg_catalog.current_setting('imgfeat.inter_op_num_threads', true),
    pg_catalog.current_setting('imgfeat.session_cache_size', true));
ALTER FUNCTION imgfeat.featurize_image(bytea, text, text) OWNER TO imgfeat_definer;
COMMENT ON FUNCTION imgfeat.featurize_image(bytea, text, text) IS
'The feature vector of one image: real[] of the model''s feature_dim (pooled layer: 512 features for resnet18, 2048 for resnet50 and resnet101, 4096 for alexnet, 1280 for efficientnet_lite0; spatial layer: four times the channels of the last feature map). image: encoded bytes of any format Pillow reads (PNG, JPEG, PGM, GIF, TIFF, BMP, WebP, ...); decoded to 8-bit RGB, resized and normalised as the model''s preprocessing spec in imgfeat.models says (NCHW float32), run through onnxruntime (the session is cached per connection and model, reloaded when the model''s sha256 or the thread settings change). resize: isocrop | isopad | aniso overrides the spec''s mode. NULL image gives NULL. PARALLEL SAFE: SELECT imgfeat.featurize_image(image) FROM big_table can use parallel workers (one onnxruntime session per worker; imgfeat.intra_op_num_threads threads each). SECURITY DEFINER (owner imgfeat_definer, which may only read the registry and call the internal function): the caller''s own arguments are the image, the model''s name and resize. Errors: undecodable bytes (SQLSTATE 22P02, with the reason); an image with more pixels than the limit (SQLSTATE 54000; the limit is imgfeat.max_image_pixels, 50 million unless configured, which a session may lower but not raise); an unknown model (SQLSTATE 42704, listing the registered ones).';
