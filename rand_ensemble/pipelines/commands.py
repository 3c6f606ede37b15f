"""The Beam commands as one call each: `run_render` and `run_weak_labels` check the arguments,
the output folder and the memory the work items need, then start the job (Beam is imported
only here, when a job runs) and print its summary."""
from __future__ import annotations

from rand_ensemble import fileio
from rand_ensemble.data import sources
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate.eval_test_set import check_eval_memory
from rand_ensemble.limits import check_memory, check_work, render_seconds
from rand_ensemble.model.config import from_flags
from rand_ensemble.pipelines import checks

WORK_ITEM_BYTES = 1024        # memory per (object, view) work item created up front


def run_render(out: str, views: int, seed: int = 0, objects: str | None = None,
               manifest: str | None = None, hw: int = 32, colour: str = "object",
               render_timeout: float = 30.0, overwrite: bool = False,
               allow_long: bool = False, beam_args: list | None = None) -> dict:
    """`rand-ensemble render`: every (object, view) -> DIR/renders-*.parquet, failures to
    DIR/failures-*.jsonl -> {"renders": count, "failures": count}.

    Args:
      objects: "START:STOP" ids, or manifest: a file of ids (one per line).
      views, seed, hw, colour: what to render. render_timeout: seconds per render.
      beam_args: options for Apache Beam (runner, workers, ...).
    """
    beam_args = list(beam_args or [])
    _plan(out, beam_args, inputs=[manifest])
    ids = checks.parse_objects(objects) if objects is not None else None
    if manifest is not None:
        if not checks.is_remote(manifest):
            fileio.check_input_file(manifest, "manifest")
        checks.check_manifest(manifest)
    count = len(ids) if ids is not None else 1              # a manifest streams its lines
    check_memory(count * views * WORK_ITEM_BYTES, f"{count} object(s) x --views {views}")
    check_work(render_seconds(count * views, hw),
               f"rendering {count} object(s) x --views {views} at --hw {hw}", allow_long)
    with checks.quiet_root_logger():
        from rand_ensemble.pipelines import render_job  # Beam and pybullet: jobs only
    result = render_job.run(out, views, seed, objects=ids, manifest=manifest, hw=hw,
                            colour=colour, beam_args=beam_args, overwrite=overwrite,
                            timeout_s=render_timeout)
    print(f"renders {result['renders']}, failures {result['failures']}: "
          f"{out}/renders-*.parquet, {out}/failures-*.jsonl")
    return result


def run_weak_labels(out: str, data: str | None = None, renders: str | None = None,
                    images: str | None = None, labels: str | None = None,
                    models: int | None = None,
                    checkpoint: str | None = None, seed: int = 0, top_k: int = 1,
                    mutual: bool = False, min_score: float | None = None,
                    batch_size: int = 64, block_size: int = 4096, overwrite: bool = False,
                    beam_args: list | None = None, index: str = "exact",
                    nprobe: int | None = None, recall_sample: int = 0,
                    embedder: dict | None = None, pixels: str | None = None) -> dict:
    """`rand-ensemble weak-labels`: each image's top-k neighbours under a random (or trained)
    ensemble, or a pixel baseline -> DIR2/pairs-*.parquet and DIR2/summary.json -> the summary.

    Args:
      data: a local data spec (any source, `data.sources.SPEC_HELP`; loaded here and handed to
        the job); or renders: a render folder; or images: a glob / Parquet of encoded images
        (labels: a CSV, only for the precision in the summary). renders and images may be
        remote (gs://...).
      models, seed: a random ensemble of M members of the architecture `embedder` names
        ({"family": NAME, field: value, ...} as the architecture flags give it,
        `model.config.from_flags`; None: the blog net); or checkpoint: trained params; or
        pixels: "raw" / "pca" / "hog", a training-free baseline (`evaluate.baselines`; pca and
        hog are fitted on the pool, so they need `data`) of the images fitted to `embedder`'s
        input.
      top_k, mutual, min_score: which neighbours become pairs.
      batch_size, block_size: images per embed batch and per search block.
      index, nprobe, recall_sample: exact tiles or approximate IVF lists (weak_label_job.run).
    """
    beam_args = list(beam_args or [])
    source = None if data is None else sources.parse_spec(data)   # bad spec: one line, now
    data_inputs = [] if source is None else sources.input_paths(source)
    _plan(out, beam_args, inputs=[renders, images, labels, checkpoint, *data_inputs])
    if renders is not None:
        checks.check_renders_dir(renders)
    if checkpoint is not None and embedder:
        raise RandEnsembleError("architecture flags go with --models; the checkpoint's file "
                                "decides the architecture")
    config = from_flags(embedder)
    if models is not None:                   # a checkpoint's size is checked when it is read
        hw = config.input_hw
        check_eval_memory((batch_size, 1, hw, hw), config, models, batch_size, 0)
    with checks.quiet_root_logger():
        from rand_ensemble.pipelines import weak_label_job  # Beam: jobs only
    s = weak_label_job.run(renders, out, models or 1, seed, top_k=top_k, mutual=mutual,
                           pixels=pixels, min_score=min_score, batch_size=batch_size,
                           beam_args=beam_args,
                           overwrite=overwrite, images=images, labels=labels,
                           block_size=block_size, checkpoint=checkpoint, data=source, index=index,
                           nprobe=nprobe, recall_sample=recall_sample,
                           embedder=config.to_dict() if embedder else None)
    if not fileio.is_writer():                   # one process of several: process 0 mines
        return s
    precision = "n/a" if s["precision"] is None else f"{s['precision']:.3f}"
    members = s.get("mean_member_precision")
    members = "n/a" if members is None else f"{members:.3f}"
    print(f"images {s['num_images']}, pairs {s['num_pairs']}, failures {s['num_failures']}, "
          f"rank-1 precision {precision} (members' mean {members}): "
          f"{out}/pairs-*.parquet, {out}/summary.json")
    return s


def _is_value(arg, argv):
    i = argv.index(arg)
    return i > 0 and argv[i - 1].startswith("--") and "=" not in argv[i - 1]


def _plan(out, beam_args, inputs=()):
    """Before Beam starts: stray arguments and the output folder (local ones only; it may not
    be, or lie inside, an input)."""
    stray = [a for a in beam_args if not a.startswith("--") and not _is_value(a, beam_args)]
    if stray:
        raise RandEnsembleError(f"unexpected argument(s): {' '.join(stray)}")
    if not checks.is_remote(out):
        fileio.check_output_dir(out, "--out folder", inputs=inputs)
