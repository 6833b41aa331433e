-- Logistic-regression classifiers: train (CALL imgfeat.train_logistic_regression), store
-- (imgfeat.classifiers, plain numbers), predict (scalar and set-based), evaluate.
-- Everything runs with the caller's rights (SECURITY INVOKER) except predict and predict_proba
-- (SECURITY DEFINER, see below). Server side: imgfeat/classifiers.py.
-- Parallel labels: PL/Python's SPI (plpy.execute, plpy.cursor) opens a subtransaction per query,
-- and PostgreSQL 15 refuses subtransactions in parallel mode ("cannot start subtransactions during
-- a parallel operation"), in workers and in the leader alike. So imgfeat.predict/predict_proba are
-- SQL wrappers that look the classifier row up themselves and pass it to a PL/Python body that runs
-- no query (PARALLEL SAFE, like imgfeat.featurize_image); only they may call it, as their owner; predict_table and evaluate read their
-- source through SPI and are PARALLEL UNSAFE.

CREATE TABLE imgfeat.classifiers (
    name              text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    format            text NOT NULL DEFAULT 'imgfeat.logistic_regression/1',
    classes           text[] NOT NULL CHECK (pg_catalog.array_ndims(classes) = 1 AND pg_catalog.cardinality(classes) >= 2),
    label_type        text NOT NULL CHECK (label_type IN ('text', 'integer', 'boolean')),
    coefficients      float8[] NOT NULL CHECK (pg_catalog.array_ndims(coefficients) = 2),
    intercepts        float8[] NOT NULL CHECK (pg_catalog.array_ndims(intercepts) = 1),
    scale_mean        float8[],
    scale_std         float8[],
    feature_dim       integer NOT NULL CHECK (feature_dim > 0),
    hyperparameters   jsonb NOT NULL,
    model_name        text,
    training_source   text,
    training_rows     bigint NOT NULL CHECK (training_rows >= 2),
    n_iterations      integer,
    training_metrics  jsonb NOT NULL,
    warnings          text[] NOT NULL DEFAULT '{}',
    library_versions  jsonb NOT NULL,
    trained_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    trained_by        name NOT NULL DEFAULT current_user,
    owner             name NOT NULL DEFAULT current_user,
    CHECK (pg_catalog.array_length(coefficients, 2) = feature_dim),
    CHECK (pg_catalog.array_length(coefficients, 1) = pg_catalog.cardinality(intercepts)),
    CHECK (pg_catalog.array_length(coefficients, 1) =
           CASE WHEN pg_catalog.cardinality(classes) = 2 THEN 1 ELSE pg_catalog.cardinality(classes) END),
    CHECK ((scale_mean IS NULL) = (scale_std IS NULL)),
    CHECK (scale_mean IS NULL OR (pg_catalog.cardinality(scale_mean) = feature_dim AND pg_catalog.cardinality(scale_std) = feature_dim))
);
COMMENT ON TABLE imgfeat.classifiers IS
'Logistic-regression classifiers trained by CALL imgfeat.train_logistic_regression, as plain numbers (never pickled code). For a feature vector x (float8[d], d = feature_dim): z = (x - scale_mean) / scale_std (skipped when scale_mean is NULL, i.e. trained with normalize => false); scores s = coefficients * z + intercepts. Binary (2 classes): coefficients is float8[1][d], P(classes[2]) = 1 / (1 + exp(-s[1])). Multiclass (k > 2 classes): coefficients is float8[k][d], row i for classes[i], P = softmax(s). classes are sorted (numbers numerically, false < true, text by code point) and stored as text; label_type is the training labels'' type. hyperparameters: l1_weight, l2_weight, max_iterations, normalize, class_weight, C, l1_ratio, solver, tol, random_state, multiclass. model_name: the featurizer model of the training features (the source''s model_name column), or NULL. training_metrics: accuracy, log_loss (and roc_auc for binary) on the training rows. format: the version of this layout. owner is kept when a classifier is replaced; trained_by is who trained this version.';
COMMENT ON COLUMN imgfeat.classifiers.coefficients IS
'2-D float8[k][d] weights over standardised features (when scale_mean is set): k = 1 for binary (weights of the positive class classes[2]), k = number of classes for multiclass (row i for classes[i]).';
COMMENT ON COLUMN imgfeat.classifiers.scale_mean IS 'float8[d] training mean of each feature, or NULL ("normalize" => false).';
COMMENT ON COLUMN imgfeat.classifiers.scale_std IS 'float8[d] training population standard deviation (ddof 0) of each feature, 1 for constant features, or NULL ("normalize" => false).';
COMMENT ON COLUMN imgfeat.classifiers.owner IS 'The role that owns this classifier name (kept on replace).';
SELECT pg_catalog.pg_extension_config_dump('imgfeat.classifiers', '');

CREATE PROCEDURE imgfeat.train_logistic_regression(
    classifier_name text,
    source regclass,
    features_column text DEFAULT 'features',
    label_column text DEFAULT 'label',
    l1_weight float8 DEFAULT 0,
    l2_weight float8 DEFAULT 1,
    max_iterations integer DEFAULT 1000,
    "normalize" boolean DEFAULT true,  -- NORMALIZE is an SQL keyword: named notation needs "normalize" => false
    class_weight text DEFAULT NULL,
    replace boolean DEFAULT false
)
LANGUAGE plpython3u
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
GD["imgfeat"].train_logistic_regression(plpy, classifier_name, source, features_column, label_column,
                                        l1_weight, l2_weight, max_iterations, normalize, class_weight, replace)
$$;
COMMENT ON PROCEDURE imgfeat.train_logistic_regression(text, regclass, text, text, float8, float8, integer, boolean, text, boolean) IS
'Trains a logistic regression on every row of source (table or view) and stores it in imgfeat.classifiers as classifier_name. features_column: a 1-D array of numbers (real[] from imgfeat.featurize; all rows the same length d, finite, not NULL). label_column: text, integer or boolean; two distinct labels train a binary model, more a multinomial (softmax) one. Regularisation in rxLogisticRegression''s terms: minimise sum_i logloss_i + l1_weight * ||w||_1 + l2_weight / 2 * ||w||_2^2 (intercepts not penalised), solved by scikit-learn''s LogisticRegression with C = 1 / (l1_weight + l2_weight), l1_ratio = l1_weight / (l1_weight + l2_weight) (both 0: no penalty, C = infinity), solver lbfgs when l1_weight = 0 else saga, tol 1e-6, max_iter = max_iterations. "normalize" (quoted in named notation, NORMALIZE being an SQL keyword: "normalize" => false): standardise each feature by the training mean and population standard deviation first; the standardisation is stored with the model and applied at prediction. class_weight: NULL or ''balanced'' (n / (n_classes * rows of the class)). replace: overwrite an existing classifier of that name (its owner is kept). Rows are named in errors by the source''s id column (else ctid, else row number): errors for a single class, NULL labels, NULL / non-finite / multi-dimensional features, vectors of different lengths (at most 10 ids named), a name already taken without replace (SQLSTATE 42710), features of several featurizer models in the source''s model_name column. Not converging within max_iterations is a NOTICE with advice (the classifier is stored). The featurizer model is taken from a single-valued model_name column. Runs with the caller''s rights: the caller needs SELECT on source (else SQLSTATE 42501).';

-- Writes to imgfeat.classifiers go through these SECURITY DEFINER functions (owner
-- imgfeat_definer): analysts hold no INSERT, UPDATE or DELETE on the shared table (UPDATE or
-- DELETE would let them LOCK it and stall every prediction). Only a classifier's owner, or a
-- member of imgfeat_admin, replaces or drops it; trained_by is always the role that wrote it.
-- Each is called through a SECURITY INVOKER wrapper that proves its caller first (see
-- imgfeat_internal.caller_proofs in 40_featurize_table.sql).

CREATE FUNCTION imgfeat_internal.store_classifier(
    name text, format text, classes text[], label_type text, coefficients float8[], intercepts float8[],
    scale_mean float8[], scale_std float8[], feature_dim integer, hyperparameters jsonb, model_name text,
    training_source text, training_rows bigint, n_iterations integer, training_metrics jsonb, warnings text[],
    library_versions jsonb, replace boolean
) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES;
    PERFORM imgfeat_internal.store_classifier_definer(name, format, classes, label_type, coefficients, intercepts,
        scale_mean, scale_std, feature_dim, hyperparameters, model_name, training_source, training_rows, n_iterations,
        training_metrics, warnings, library_versions, replace);
END
$$;
COMMENT ON FUNCTION imgfeat_internal.store_classifier(text, text, text[], text, float8[], float8[], float8[], float8[], integer, jsonb, text, text, bigint, integer, jsonb, text[], jsonb, boolean) IS
'Internal. Stores a trained classifier for the caller (SECURITY INVOKER: proves the caller, then calls imgfeat_internal.store_classifier_definer): a new name becomes the caller''s; an existing one is replaced only with replace => true (else SQLSTATE 42710) and only by its owner or a member of imgfeat_admin (else SQLSTATE 42501).';

CREATE FUNCTION imgfeat_internal.store_classifier_definer(
    name text, format text, classes text[], label_type text, coefficients float8[], intercepts float8[],
    scale_mean float8[], scale_std float8[], feature_dim integer, hyperparameters jsonb, model_name text,
    training_source text, training_rows bigint, n_iterations integer, training_metrics jsonb, warnings text[],
    library_versions jsonb, replace boolean
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name := imgfeat_internal.caller();
    holder name;
BEGIN
    SELECT c.owner INTO holder FROM imgfeat.classifiers c WHERE c.name = store_classifier_definer.name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO imgfeat.classifiers (name, format, classes, label_type, coefficients, intercepts, scale_mean, scale_std,
                                         feature_dim, hyperparameters, model_name, training_source, training_rows,
                                         n_iterations, training_metrics, warnings, library_versions, owner, trained_by)
        VALUES (name, format, classes, label_type, coefficients, intercepts, scale_mean, scale_std, feature_dim,
                hyperparameters, model_name, training_source, training_rows, n_iterations, training_metrics, warnings,
                library_versions, who, who);
        RETURN;
    END IF;
    IF NOT replace THEN
        RAISE EXCEPTION 'imgfeat: classifier % already exists', pg_catalog.quote_literal(name)
            USING ERRCODE = '42710', HINT = 'pass replace => true to overwrite it, or choose another name';
    END IF;
    IF holder <> who AND NOT pg_catalog.pg_has_role(who, 'imgfeat_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'imgfeat: classifier % belongs to %: only its owner or imgfeat_admin may replace it',
            pg_catalog.quote_literal(name), holder USING ERRCODE = '42501', HINT = 'train under another name';
    END IF;
    UPDATE imgfeat.classifiers c
       SET format = store_classifier_definer.format, classes = store_classifier_definer.classes, label_type = store_classifier_definer.label_type,
           coefficients = store_classifier_definer.coefficients, intercepts = store_classifier_definer.intercepts,
           scale_mean = store_classifier_definer.scale_mean, scale_std = store_classifier_definer.scale_std,
           feature_dim = store_classifier_definer.feature_dim, hyperparameters = store_classifier_definer.hyperparameters,
           model_name = store_classifier_definer.model_name, training_source = store_classifier_definer.training_source,
           training_rows = store_classifier_definer.training_rows, n_iterations = store_classifier_definer.n_iterations,
           training_metrics = store_classifier_definer.training_metrics, warnings = store_classifier_definer.warnings,
           library_versions = store_classifier_definer.library_versions, trained_at = pg_catalog.now(), trained_by = who
     WHERE c.name = store_classifier_definer.name;
END
$$;
COMMENT ON FUNCTION imgfeat_internal.store_classifier_definer(text, text, text[], text, float8[], float8[], float8[], float8[], integer, jsonb, text, text, bigint, integer, jsonb, text[], jsonb, boolean) IS
'Internal, called by imgfeat_internal.store_classifier. Stores a trained classifier for the proven caller (imgfeat_internal.caller()): a new name becomes the caller''s (owner = trained_by = caller); an existing one is replaced only with replace => true and only by its owner or a member of imgfeat_admin (its owner is kept); SQLSTATE 42710 for an existing name without replace, SQLSTATE 42501 for another role''s classifier or an unproven caller.';

CREATE FUNCTION imgfeat.drop_classifier(classifier_name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES;
    RETURN imgfeat_internal.drop_classifier_definer(classifier_name);
END
$$;
COMMENT ON FUNCTION imgfeat.drop_classifier(text) IS
'Removes a classifier; true if it existed. Only its owner or a member of imgfeat_admin may (SQLSTATE 42501 otherwise). The owner is the role whose code calls it (current_user here: SECURITY INVOKER), never the session''s role: it proves itself in imgfeat_internal.caller_proofs and calls imgfeat_internal.drop_classifier_definer (SECURITY DEFINER, owner imgfeat_definer; analysts hold no DELETE on the shared table).';

CREATE FUNCTION imgfeat_internal.drop_classifier_definer(classifier_name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name := imgfeat_internal.caller();
    holder name;
BEGIN
    SELECT c.owner INTO holder FROM imgfeat.classifiers c WHERE c.name = classifier_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF holder <> who AND NOT pg_catalog.pg_has_role(who, 'imgfeat_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'imgfeat: classifier % belongs to %: only its owner or imgfeat_admin may drop it',
            pg_catalog.quote_literal(classifier_name), holder USING ERRCODE = '42501';
    END IF;
    DELETE FROM imgfeat.classifiers c WHERE c.name = classifier_name;
    RETURN true;
END
$$;
COMMENT ON FUNCTION imgfeat_internal.drop_classifier_definer(text) IS
'Internal, called by imgfeat.drop_classifier. Removes a classifier; true if it existed. Only its owner or a member of imgfeat_admin may (SQLSTATE 42501 otherwise, and for an unproven caller). SECURITY DEFINER (owner imgfeat_definer): analysts hold no DELETE on the shared table.';

-- The one definition of a classifier row's version: whatever rewrites the row (a replace, an
-- UPDATE, VACUUM FULL) changes it. The per-backend cache keys classifiers by it.
CREATE VIEW imgfeat_internal.classifier_versions AS
SELECT c.name, c.trained_at::pg_catalog.text || ' ' || c.xmin::pg_catalog.text || ' ' || c.ctid::pg_catalog.text AS version,
       c AS classifier
FROM imgfeat.classifiers c;
COMMENT ON VIEW imgfeat_internal.classifier_versions IS
'Internal. Each classifier''s name, the version of its row (trained_at, xmin, ctid: any rewrite of the row changes it) and the row itself; read by imgfeat.predict, imgfeat.predict_proba and the library''s classifier cache.';

CREATE FUNCTION imgfeat_internal.classify(
    features real[], classifier_name text, classifier imgfeat.classifiers, version text, output text
) RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
@PARALLEL_PRELUDE@
return GD["imgfeat"].classify(plpy, features, classifier_name, classifier, version, output)
$$;
COMMENT ON FUNCTION imgfeat_internal.classify(real[], text, imgfeat.classifiers, text, text) IS
'Internal: the PL/Python body of imgfeat.predict (output ''label'') and imgfeat.predict_proba (output ''proba'', JSON text; ''length <n>'': the wrappers found a vector of n elements, not feature_dim, and pass an empty array: raise SQLSTATE 22023), given the classifier''s row and its version (trained_at, xmin, ctid) so that it needs no SPI (parallel workers). Executable only by imgfeat_definer, the owner of imgfeat.predict and imgfeat.predict_proba.';

CREATE FUNCTION imgfeat_internal.classifier_cached(classifier_name text, version text) RETURNS boolean
LANGUAGE plpython3u STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
server = GD.get("imgfeat")
return server is not None and server.classifier_cached(classifier_name, version)
$$;
COMMENT ON FUNCTION imgfeat_internal.classifier_cached(text, text) IS
'Internal: whether this backend holds the classifier at this row version (trained_at, xmin, ctid), so that imgfeat.predict passes (detoasts, converts) the classifier row only when it does not. Runs no query.';

CREATE FUNCTION imgfeat.predict(classifier_name text, features real[]) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    -- A vector of another length than the classifier's is refused here, from its cardinality:
    -- the PL/Python body is given an empty array and its length (output 'length <n>'), never
    -- the array itself (PL/Python would make a Python list of all its elements first).
    SELECT imgfeat_internal.classify(
               CASE WHEN pg_catalog.cardinality(predict.features) = (v.classifier).feature_dim THEN predict.features
                    WHEN predict.features IS NULL OR v.name IS NULL THEN predict.features
                    ELSE '{}'::real[] END,
               predict.classifier_name,
               CASE WHEN imgfeat_internal.classifier_cached(predict.classifier_name, v.version) THEN NULL ELSE v.classifier END,
               v.version,
               CASE WHEN predict.features IS NULL OR v.name IS NULL
                         OR pg_catalog.cardinality(predict.features) = (v.classifier).feature_dim THEN 'label'
                    ELSE 'length ' || pg_catalog.cardinality(predict.features)::pg_catalog.text END)
      FROM (SELECT) AS one LEFT JOIN imgfeat_internal.classifier_versions v ON v.name = predict.classifier_name;
END;
ALTER FUNCTION imgfeat.predict(text, real[]) OWNER TO imgfeat_definer;
COMMENT ON FUNCTION imgfeat.predict(text, real[]) IS
'The most probable class (as text: integer and boolean labels as their text form) of one feature vector real[d] under the classifier. NULL features give NULL. Errors: unknown classifier (SQLSTATE 42704; known ones listed in DETAIL), a vector of another number of elements than the classifier''s feature_dim (checked from its cardinality before the array is handed to PL/Python, so a huge array costs no memory), a multi-dimensional array, NaN/infinite/NULL elements (SQLSTATE 22023). The classifier is built once per backend and rebuilt when its row changes (replace, UPDATE). PARALLEL SAFE: the row is looked up here and handed to a PL/Python body that runs no query, so predict composes with imgfeat.featurize_image in parallel plans. SECURITY DEFINER (owner imgfeat_definer, which may only read imgfeat.classifiers and call the internal function): every classifier is readable by every imgfeat_user anyway, and no caller can hand the internal function a row of their own. For whole tables imgfeat.predict_table is faster.';

CREATE FUNCTION imgfeat.predict_proba(classifier_name text, features real[]) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    -- A vector of another length than the classifier's is refused here, from its cardinality:
    -- the PL/Python body is given an empty array and its length (output 'length <n>'), never
    -- the array itself (PL/Python would make a Python list of all its elements first).
    SELECT imgfeat_internal.classify(
               CASE WHEN pg_catalog.cardinality(predict_proba.features) = (v.classifier).feature_dim THEN predict_proba.features
                    WHEN predict_proba.features IS NULL OR v.name IS NULL THEN predict_proba.features
                    ELSE '{}'::real[] END,
               predict_proba.classifier_name,
               CASE WHEN imgfeat_internal.classifier_cached(predict_proba.classifier_name, v.version) THEN NULL ELSE v.classifier END,
               v.version,
               CASE WHEN predict_proba.features IS NULL OR v.name IS NULL
                         OR pg_catalog.cardinality(predict_proba.features) = (v.classifier).feature_dim THEN 'proba'
                    ELSE 'length ' || pg_catalog.cardinality(predict_proba.features)::pg_catalog.text END)::pg_catalog.jsonb
      FROM (SELECT) AS one LEFT JOIN imgfeat_internal.classifier_versions v ON v.name = predict_proba.classifier_name;
END;
ALTER FUNCTION imgfeat.predict_proba(text, real[]) OWNER TO imgfeat_definer;
COMMENT ON FUNCTION imgfeat.predict_proba(text, real[]) IS
'Class probabilities of one feature vector real[d] as jsonb {"label": probability, ...} over all the classifier''s classes (floats summing to 1). NULL features give NULL. Errors, caching and SECURITY DEFINER as imgfeat.predict; PARALLEL SAFE.';

CREATE FUNCTION imgfeat.predict_table(
    classifier_name text,
    source regclass,
    features_column text DEFAULT 'features',
    id_column text DEFAULT 'id'
) RETURNS TABLE (id text, label text, probability float8)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE ROWS 1000
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].predict_table(plpy, classifier_name, source, features_column, id_column)
$$;
COMMENT ON FUNCTION imgfeat.predict_table(text, regclass, text, text) IS
'Set-based imgfeat.predict: for every row of source (table or view), its id_column (as text), the most probable class and that class''s probability (float8 in [0, 1]), in id order. Rows are read and scored 200 at a time as one matrix: faster than calling imgfeat.predict per row. NULL features give a NULL label and probability. Errors: unknown classifier or column, vectors of the wrong length or with NaN/infinite/NULL elements (ids named, at most 10). Runs with the caller''s rights.';

CREATE FUNCTION imgfeat.evaluate(
    classifier_name text,
    source regclass,
    features_column text DEFAULT 'features',
    label_column text DEFAULT 'label'
) RETURNS jsonb
LANGUAGE plpython3u STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].evaluate(plpy, classifier_name, source, features_column, label_column)
$$;
COMMENT ON FUNCTION imgfeat.evaluate(text, regclass, text, text) IS
'Scores the classifier on every row of source (labels compared as text) and returns jsonb: n; accuracy; log_loss (natural log, mean); macro_f1; per_class {label: {precision, recall, f1, support}} (0 where undefined); confusion_matrix {labels, matrix} (rows: true class, columns: predicted, in the order of labels); for binary classifiers also auc (ROC AUC, positive class = classes[2]) and roc {fpr, tpr, thresholds} (the first threshold, "no row positive", is max(score) + 1), both null when the rows hold one class only. Errors: NULL labels or features, labels that are not classes of the classifier, vectors of the wrong length or not finite (ids named, at most 10). Runs with the caller''s rights.';
