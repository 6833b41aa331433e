-- Logistic-regression classifiers end to end (pg_regress): train, inspect, predict, evaluate, errors.
-- Features are literal real[] values; numbers in the output are rounded so it is deterministic.
SET client_min_messages = warning;  -- plpython3u may exist already (earlier tests)
CREATE EXTENSION imgfeat CASCADE;
RESET client_min_messages;
\set SHOW_CONTEXT never
CREATE TABLE pets (id integer PRIMARY KEY, features real[], label text);
INSERT INTO pets VALUES
  (1, '{0.9, 0.2, 5.0}', 'cat'),
  (2, '{1.1, 0.1, 4.0}', 'cat'),
  (3, '{0.8, 0.4, 6.0}', 'cat'),
  (4, '{0.6, 0.9, 5.5}', 'cat'),
  (5, '{0.2, 1.0, 4.5}', 'dog'),
  (6, '{0.1, 1.2, 5.2}', 'dog'),
  (7, '{0.4, 0.8, 6.1}', 'dog'),
  (8, '{0.7, 1.1, 4.8}', 'dog');
-- binary: two labels; defaults l1_weight 0, l2_weight 1 (C = 1), standardised features
CALL imgfeat.train_logistic_regression('pets', 'pets');
SELECT name, classes, label_type, array_dims(coefficients) AS dims, feature_dim, model_name, training_rows,
       hyperparameters->>'C' AS c, hyperparameters->>'l1_ratio' AS l1_ratio, hyperparameters->>'solver' AS solver,
       array_length(scale_mean, 1) AS scaled, round((training_metrics->>'accuracy')::numeric, 3) AS train_accuracy,
       trained_by = current_user AS by_me, owner = current_user AS owned
  FROM imgfeat.classifiers;
SELECT id, label, imgfeat.predict('pets', features) AS predicted,
       round((imgfeat.predict_proba('pets', features)->>'dog')::numeric, 2) AS p_dog
  FROM pets ORDER BY id;
SELECT id, label, round(probability::numeric, 2) AS probability FROM imgfeat.predict_table('pets', 'pets');
SELECT imgfeat.predict('pets', NULL) IS NULL AS null_in_null_out,
       round((SELECT sum(value::numeric) FROM jsonb_each_text(imgfeat.predict_proba('pets', '{0.5, 0.5, 5}'))), 6) AS proba_sum;
SELECT e->'n' AS n, round((e->>'accuracy')::numeric, 3) AS accuracy, e->'confusion_matrix' AS confusion,
       round((e->'per_class'->'dog'->>'recall')::numeric, 3) AS dog_recall, round((e->>'auc')::numeric, 3) AS auc,
       jsonb_array_length(e->'roc'->'fpr') = jsonb_array_length(e->'roc'->'tpr') AS roc_points
  FROM (SELECT imgfeat.evaluate('pets', 'pets') AS e) r;
-- an existing name needs replace => true
CALL imgfeat.train_logistic_regression('pets', 'pets');
CALL imgfeat.train_logistic_regression('pets', 'pets', l2_weight => 4, replace => true);
SELECT hyperparameters->>'C' AS c FROM imgfeat.classifiers WHERE name = 'pets';
-- multiclass with integer labels, without standardisation ("normalize": NORMALIZE is an SQL keyword)
CREATE TABLE dials (id integer, features real[], label integer);
INSERT INTO dials VALUES
  (1, '{1, 0}', 0), (2, '{0.9, 0.1}', 0), (3, '{0.8, -0.1}', 0),
  (4, '{0, 1}', 90), (5, '{0.1, 0.9}', 90), (6, '{-0.1, 0.8}', 90),
  (7, '{-1, 0}', 180), (8, '{-0.9, 0.1}', 180), (9, '{-0.8, -0.1}', 180);
CALL imgfeat.train_logistic_regression('dials', 'dials', "normalize" => false, l2_weight => 0.1);
SELECT classes, label_type, array_dims(coefficients) AS dims, scale_mean IS NULL AS unscaled,
       hyperparameters->>'multiclass' AS kind
  FROM imgfeat.classifiers WHERE name = 'dials';
SELECT imgfeat.predict('dials', '{0.95, 0}') AS east, imgfeat.predict('dials', '{0, 0.95}') AS north,
       imgfeat.predict('dials', '{-0.95, 0}') AS west;
SELECT e->'n' AS n, e->'accuracy' AS accuracy, e->'confusion_matrix'->'matrix' AS confusion, e ? 'auc' AS has_auc
  FROM (SELECT imgfeat.evaluate('dials', 'dials') AS e) r;
-- errors
CREATE TABLE one_class (id integer, features real[], label text);
INSERT INTO one_class VALUES (1, '{1}', 'x'), (2, '{2}', 'x');
CALL imgfeat.train_logistic_regression('one', 'one_class');
SELECT imgfeat.predict('pets', '{1, 2}');
SELECT imgfeat.predict('pets', '{1, NaN, 2}');
SELECT imgfeat.predict('no_such', '{1, 2, 3}');
CALL imgfeat.train_logistic_regression('pets2', 'pets', features_column => 'vector');
UPDATE pets SET features = '{1, 2}' WHERE id = 3;
CALL imgfeat.train_logistic_regression('pets2', 'pets');
UPDATE pets SET features = '{1, Infinity, 2}' WHERE id IN (3, 6);
CALL imgfeat.train_logistic_regression('pets2', 'pets');
UPDATE pets SET features = NULL WHERE id IN (2, 7);
CALL imgfeat.train_logistic_regression('pets2', 'pets');
CALL imgfeat.train_logistic_regression('pets2', 'pets', l1_weight => -1);
SELECT name FROM imgfeat.classifiers ORDER BY name;
SELECT imgfeat.drop_classifier('dials');
SELECT imgfeat.predict('dials', '{1, 0}');
DROP TABLE pets, dials, one_class;
DROP EXTENSION imgfeat;
