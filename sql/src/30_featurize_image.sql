-- Featurizing single images.

CREATE FUNCTION imgfeat.featurize_image(image bytea, model_name text DEFAULT 'resnet18', resize text DEFAULT NULL)
RETURNS real[]
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 10000
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat._bootstrap()")
return GD["imgfeat"].featurize_image(plpy, image, model_name, resize)
$$;
COMMENT ON FUNCTION imgfeat.featurize_image(bytea, text, text) IS
'The feature vector of one image: real[] of the model''s feature_dim (512 for resnet18, 2048 for resnet50/resnet101, 4096 for alexnet). image: encoded bytes of any format Pillow reads (PNG, JPEG, PGM, GIF, TIFF, BMP, WebP, ...); decoded to 8-bit RGB, resized and normalised as the model''s preprocessing spec says, run through onnxruntime (the session is cached per connection and model, reloaded when the model''s sha256 changes). resize: isocrop | isopad | aniso overrides the spec''s mode. NULL image gives NULL. Errors: undecodable bytes (SQLSTATE 22P02, with the reason), more pixels than imgfeat.max_image_pixels (54000), unknown model (42704, listing the registered ones).';
