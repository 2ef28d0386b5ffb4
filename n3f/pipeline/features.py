"""The feature stage: run a teacher over every frame of a scene into an on-disk cache.

Cache folder ``<cache root>/<scene>/<teacher>-<key>/`` (``key`` hashes the teacher's options and
weights, the PCA size, and every frame's file name, size and modification time, so any change
gives a new folder and nothing stale is ever reused):

- ``meta.json``: teacher, options, weights id, image and feature-grid sizes, cell geometry,
  frames, PCA explained variance, ``status`` (``partial`` while running, ``complete`` at the end).
- ``features.f16``: float16 memory map of shape ``(n_frames, h, w, dim)``: the teacher's features
  projected on the scene's PCA basis (or raw when ``pca=0``).
- ``pca.npz``: ``mean`` (C,), ``components`` (dim, C), ``explained_variance_ratio`` (dim,).
- while running: ``raw.f16`` (raw features) and ``done.npy`` (frames finished), so an interrupted
  run resumes from the frames already done.
- ``preview/`` (with ``preview=True``): PCA-to-RGB pictures.
- sharded extraction (``n3f features --shard i/n``, or ``n3f features`` under torchrun): shard i
  owns a contiguous range of frames and writes only its own ``shards/raw-i-of-n.f16`` and
  ``shards/done-i-of-n.npy``, so shards on other processes or machines sharing the folder never
  write the same file. The next unsharded call (rank 0 under torchrun) checks that every shard is
  complete, naming the missing frames and the command that extracts them otherwise, copies the
  shards into ``raw.f16`` and fits the PCA over the whole scene as usual.

Memory stays bounded for long videos: frames are streamed in batches, the PCA is fitted on a
fixed-size sample of feature vectors and the projection runs in chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from n3f.errors import N3FError
from n3f.io import atomic_save_image, atomic_save_npy, atomic_write_bytes, atomic_write_json, check_writable, safe_name
from n3f.scene.types import Scene

CACHE_VERSION = 1
PCA_SAMPLE = 100_000
DINO_PREFERENCE = ("dino_vitb8", "dino_vits8")


def cache_root() -> Path:
    """Default root of feature caches: ``$N3F_CACHE`` or ``$N3F_DATA/cache/features``."""
    from n3f.scene.catalog import data_root

    return Path(os.environ.get("N3F_CACHE") or data_root() / "cache" / "features")


def default_teacher() -> str:
    """The teacher used when none is named: DINO ViT-B/8 or ViT-S/8 when their weights are on this
    machine (``$N3F_WEIGHTS`` or the Hugging Face cache), else the offline ``effnet_lite0``."""
    from teachers.vit import VIT_MODELS
    from teachers.weights import weights_dir

    for name in DINO_PREFERENCE:
        arch, official, _ = VIT_MODELS[name]
        if (weights_dir() / official).is_file():
            return name
        try:
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(f"timm/{arch}", "model.safetensors"), str):
                return name
        except Exception:
            pass
    return "effnet_lite0"


def build_teacher(name: str | None, **options):
    """Create a teacher by name (None: :func:`default_teacher`), turning its errors into N3FError."""
    import teachers

    name = name or default_teacher()
    try:
        return teachers.create(name, **{k: v for k, v in options.items() if v is not None})
    except teachers.TeacherError as exc:
        raise N3FError(str(exc)) from exc
    except TypeError as exc:
        raise N3FError(f"teacher {name!r} does not take these options: {exc}") from exc


def _scene_signature(scene: Scene) -> list:
    rows = []
    for f in scene.frames:
        try:
            st = os.stat(f.image_path)
        except OSError as exc:
            raise N3FError(f"image not found: {f.image_path}") from exc
        rows.append([f.name, st.st_size, st.st_mtime_ns, f.width, f.height])
    return rows


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class FeatureCache:
    """A finished feature cache (see the module docstring for the layout)."""

    folder: Path
    meta: dict

    @classmethod
    def open(cls, folder: Path) -> FeatureCache:
        """Open a complete cache folder.

        Raises:
            N3FError: not a cache, or not complete.
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise N3FError(f"{folder} is not a feature cache (no readable meta.json)") from exc
        if meta.get("status") != "complete":
            raise N3FError(f"feature cache {folder} is incomplete; rerun `n3f features` to finish it")
        return cls(folder, meta)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(n_frames, h, w, dim)."""
        return tuple(self.meta["shape"])

    @property
    def teacher(self) -> str:
        """Description of the teacher that produced the features."""
        return self.meta["teacher_description"]

    def features(self) -> np.memmap:
        """Read-only memory map (n_frames, h, w, dim) float16."""
        return np.memmap(self.folder / "features.f16", dtype=np.float16, mode="r", shape=self.shape)

    def frame(self, index: int) -> np.ndarray:
        """Features of one frame, (h, w, dim) float32."""
        return np.asarray(self.features()[index], dtype=np.float32)

    def pca(self) -> dict[str, np.ndarray]:
        """The PCA basis: ``mean`` (C,), ``components`` (dim, C), ``explained_variance_ratio``."""
        with np.load(self.folder / "pca.npz") as data:
            return {k: data[k] for k in data.files}


def _load_batch(scene: Scene, indices: list[int], size: tuple[int, int]):
    import cv2
    import torch

    from n3f.scene.images import load_frame_image

    images = []
    for i in indices:
        image = load_frame_image(scene.frames[i])
        if image.shape[:2] != size:
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(image)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def compute_features(
    scene: Scene,
    teacher_name: str | None = None,
    teacher_options: dict | None = None,
    pca: int = 64,
    root: Path | None = None,
    preview: bool = False,
    seed: int = 0,
    progress: Callable | None = None,
    shard: tuple[int, int] | None = None,
) -> FeatureCache | None:
    """Extract (or reuse, or resume) the teacher features of every frame of ``scene``.

    Args:
        scene: the scene; frames of other sizes are resized to frame 0's size.
        teacher_name: a teacher from ``teachers.available()``, or None for the default.
        teacher_options: options for ``teachers.create`` (weights, stride, layer, facet, device...).
        pca: PCA dimensions fitted over the whole scene; 0 keeps the teacher's raw channels.
        root: cache root (default :func:`cache_root`).
        preview: also write PCA-to-RGB pictures into ``preview/``.
        seed: seeds the PCA sample.
        progress: ``progress(iterable, description, total)``.
        shard: ``(i, n)``: extract only shard i of n (a contiguous range of frames) into its own
            files and return None; a later call without ``shard`` gathers the shards.

    Returns:
        The complete cache (None for a shard).

    Raises:
        N3FError: a bad shard, or shards that are incomplete when they are gathered (the message
            names the missing frames and the ``--shard`` runs that produce them).
    """
    teacher = build_teacher(teacher_name, **(teacher_options or {}))
    height, width = scene.frames[0].height, scene.frames[0].width
    C = teacher.dim
    if pca < 0 or pca > C:
        raise N3FError(f"--pca must be between 0 (keep all {C} channels) and {C}, got {pca}")
    key_doc = {
        "version": CACHE_VERSION,
        "teacher": teacher.name,
        "options": teacher.options(),
        "pca": pca,
        "seed": seed,
        "size": [height, width],
        "frames": _scene_signature(scene),
    }
    key = _digest(key_doc)
    folder = Path(root or cache_root()) / safe_name(scene.name) / f"{teacher.name}-{key}"
    meta_path = folder / "meta.json"
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise N3FError(f"--shard must be i/n with 0 <= i < n (got {shard[0]}/{shard[1]})")

    def complete() -> bool:
        if not meta_path.is_file():
            return False
        meta = json.loads(meta_path.read_text())
        return meta.get("status") == "complete" and meta.get("key") == key

    def open_complete() -> FeatureCache | None:
        if shard is not None:
            return None
        cache = FeatureCache(folder, json.loads(meta_path.read_text()))
        if preview and not (folder / "preview").is_dir():
            write_preview(cache, scene)
        return cache

    if complete():
        return open_complete()
    check_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if shard is not None:  # shards write their own files; the gathering call builds under the lock
        return _build_features(teacher, scene, folder, key, key_doc, pca, seed, preview, progress, shard)
    from filelock import FileLock

    # Two fits of one scene started together would otherwise write the same raw file at once;
    # the second waits here and then finds the first's cache complete.
    with FileLock(folder / "build.lock"):
        if complete():
            return open_complete()
        return _build_features(teacher, scene, folder, key, key_doc, pca, seed, preview, progress, shard)


def _build_features(teacher, scene, folder: Path, key: str, key_doc: dict, pca: int, seed: int, preview: bool, progress, shard):
    """Extract the features of ``scene`` into ``folder`` (see :func:`compute_features`, whose
    arguments these are); the complete cache, or None for a shard."""
    height, width = scene.frames[0].height, scene.frames[0].width
    geometry = teacher.geometry(height, width)
    n, h, w, C = len(scene), geometry.height, geometry.width, teacher.dim
    dim = pca or C
    meta_path = folder / "meta.json"
    meta = {
        "status": "partial",
        "key": key,
        "teacher": teacher.name,
        "teacher_description": teacher.describe(),
        "options": teacher.options(),
        "image_size": [height, width],
        "geometry": geometry.as_dict(),
        "raw_dim": C,
        "shape": [n, h, w, dim],
        "pca": pca,
        "scene": scene.name,
        "frames": [f.name for f in scene.frames],
        "key_doc": key_doc,
    }
    atomic_write_json(meta_path, meta)  # every shard writes the same document, atomically

    if shard is not None:
        _extract(teacher, scene, folder / "shards", f"{shard[0]}-of-{shard[1]}", _shard_frames(n, *shard), (h, w, C), progress)
        return None
    raw_path, done_path = folder / "raw.f16", folder / "done.npy"
    resuming = raw_path.is_file() and done_path.is_file() and raw_path.stat().st_size == n * h * w * C * 2
    raw = np.memmap(raw_path, dtype=np.float16, mode="r+" if resuming else "w+", shape=(n, h, w, C))
    done = np.load(done_path) if resuming else np.zeros(n, dtype=bool)
    if (folder / "shards").is_dir():
        _gather_shards(folder, scene, raw, done, (h, w, C))
        atomic_save_npy(done_path, done)
    todo = [i for i in range(n) if not done[i]]
    started = time.perf_counter()
    _run_teacher(teacher, scene, list(range(n)), raw, done, done_path, f"features {teacher.name}", progress)
    seconds = time.perf_counter() - started

    if pca:
        basis = fit_pca(raw, pca, seed)
        out_path = folder / "features.f16.partial"
        projected = np.memmap(out_path, dtype=np.float16, mode="w+", shape=(n, h, w, dim))
        for i in range(n):
            x = np.asarray(raw[i], dtype=np.float32).reshape(-1, C) - basis["mean"]
            projected[i] = (x @ basis["components"].T).reshape(h, w, dim).astype(np.float16)
        projected.flush()
        del projected
        os.replace(out_path, folder / "features.f16")
        np.savez(folder / "pca.npz", **basis)
        del raw
        raw_path.unlink()
        meta["explained_variance"] = float(basis["explained_variance_ratio"].sum())
    else:
        del raw
        os.replace(raw_path, folder / "features.f16")
        np.savez(
            folder / "pca.npz",
            mean=np.zeros(C, np.float32),
            components=np.eye(C, dtype=np.float32),
            explained_variance_ratio=np.ones(C, np.float32) / C,
        )
    done_path.unlink(missing_ok=True)
    meta.update(
        status="complete", seconds=round(seconds, 2), frames_per_second=round(len(todo) / seconds, 3) if todo and seconds > 0 else None
    )
    atomic_write_json(meta_path, meta)
    cache = FeatureCache(folder, meta)
    if preview:
        write_preview(cache, scene)
    return cache


def _shard_frames(n: int, index: int, count: int) -> list[int]:
    """The contiguous frames ``[start, stop)`` of shard ``index`` of ``count`` (sizes differ by <= 1)."""
    from n3f.pipeline.distributed import DistContext, shard_range

    start, stop = shard_range(n, DistContext(index, count))
    return list(range(start, stop))


def _extract(teacher, scene: Scene, folder: Path, tag: str, frames: list[int], cell: tuple[int, int, int], progress) -> None:
    """Run ``teacher`` over ``frames`` into ``folder/raw-<tag>.f16`` (len(frames), h, w, C) and
    ``folder/done-<tag>.npy``; resumes from the frames already done."""
    folder.mkdir(parents=True, exist_ok=True)
    raw_path, done_path = folder / f"raw-{tag}.f16", folder / f"done-{tag}.npy"
    shape = (len(frames), *cell)
    resuming = raw_path.is_file() and done_path.is_file() and raw_path.stat().st_size == int(np.prod(shape)) * 2
    raw = np.memmap(raw_path, dtype=np.float16, mode="r+" if resuming else "w+", shape=shape)
    done = np.load(done_path) if resuming else np.zeros(len(frames), dtype=bool)
    _run_teacher(teacher, scene, frames, raw, done, done_path, f"features {teacher.name} shard {tag}", progress)


def _run_teacher(teacher, scene: Scene, frames: list[int], raw: np.ndarray, done: np.ndarray, done_path: Path, what: str, progress) -> None:
    """Fill rows ``k`` of ``raw`` (len(frames), h, w, C) with the features of scene frame
    ``frames[k]`` wherever ``done[k]`` is False, in teacher batches, saving ``done`` after each."""
    todo = [k for k in range(len(frames)) if not done[k]]
    batches = [todo[k : k + teacher.batch_size] for k in range(0, len(todo), teacher.batch_size)]
    iterator = progress(batches, what, len(batches)) if progress else batches
    size = (scene.frames[0].height, scene.frames[0].width)
    for batch in iterator:
        out = teacher(_load_batch(scene, [frames[k] for k in batch], size))
        raw[batch] = out.permute(0, 2, 3, 1).cpu().numpy().astype(np.float16)
        raw.flush()
        done[batch] = True
        atomic_save_npy(done_path, done)


def _gather_shards(folder: Path, scene: Scene, raw: np.ndarray, done: np.ndarray, cell: tuple[int, int, int]) -> None:
    """Copy complete shards from ``folder/shards`` into ``raw`` (n, h, w, C) and mark ``done``.

    Raises:
        N3FError: shards of different counts, or frames that no shard has finished.
    """
    import re

    tags = {re.fullmatch(r"done-(\d+)-of-(\d+)\.npy", p.name) for p in (folder / "shards").glob("done-*-of-*.npy")}
    counts = {int(m.group(2)) for m in tags if m}
    if len(counts) > 1:
        raise N3FError(f"{folder / 'shards'} holds shards of different splits ({sorted(counts)}); delete it and extract again")
    if not counts:
        return
    count, n = counts.pop(), len(done)
    missing: dict[int, list[int]] = {}
    shard_done = []
    for index in range(count):
        frames = _shard_frames(n, index, count)
        done_path = folder / "shards" / f"done-{index}-of-{count}.npy"
        shard_done.append(np.load(done_path) if done_path.is_file() else np.zeros(len(frames), dtype=bool))
        lost = [f for f, ok in zip(frames, shard_done[-1]) if not ok and not done[f]]
        if lost:
            missing[index] = lost
    if missing:
        names = [scene.frames[f].name for lost in missing.values() for f in lost]
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        runs = "; ".join(f"n3f features --scene {scene.name} --shard {i}/{count}" for i in missing)
        raise N3FError(
            f"feature cache {folder} is missing {len(names)} frame(s) ({shown}); finish their shards with the same options: {runs}"
        )
    for index in range(count):
        frames = _shard_frames(n, index, count)
        part = np.memmap(folder / "shards" / f"raw-{index}-of-{count}.f16", dtype=np.float16, mode="r", shape=(len(frames), *cell))
        for k, f in enumerate(frames):
            if shard_done[index][k]:
                raw[f] = part[k]
        del part
    raw.flush()
    done[:] = True
    import shutil

    shutil.rmtree(folder / "shards")


def fit_pca(raw: np.ndarray, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Fit a k-dimensional PCA on a sample of at most 100,000 feature vectors of ``raw``.

    Args:
        raw: (n_frames, h, w, C) features (a memory map is fine: only the sample is read).

    Returns:
        ``mean`` (C,), ``components`` (k, C), ``explained_variance_ratio`` (k,), all float32.
    """
    from sklearn.decomposition import PCA

    n, h, w, C = raw.shape
    rng = np.random.default_rng(seed)
    per_frame = max(1, min(h * w, PCA_SAMPLE // n))
    sample = np.concatenate(
        [np.asarray(raw[i], dtype=np.float32).reshape(-1, C)[rng.choice(h * w, per_frame, replace=False)] for i in range(n)]
    )
    model = PCA(n_components=k, random_state=seed).fit(sample)
    return {
        "mean": model.mean_.astype(np.float32),
        "components": model.components_.astype(np.float32),
        "explained_variance_ratio": model.explained_variance_ratio_.astype(np.float32),
    }


def pca_rgb(features: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """First three channels of (h, w, D) PCA features to uint8 RGB, scaled by ``lo``/``hi`` (3,)."""
    rgb = (features[..., :3] - lo) / np.maximum(hi - lo, 1e-6)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_preview(cache: FeatureCache, scene: Scene, n_frames: int = 8) -> Path:
    """Write ``preview/NNNN.png`` PCA-to-RGB maps and ``preview/sheet.png`` (image above features)."""
    import cv2
    from PIL import Image, ImageDraw

    from n3f.scene.images import load_frame_image

    feats = cache.features()
    n = len(feats)
    picks = np.unique(np.linspace(0, n - 1, min(n, n_frames)).round().astype(int))
    sample = np.concatenate([np.asarray(feats[i][..., :3], dtype=np.float32).reshape(-1, 3) for i in picks])
    lo, hi = np.percentile(sample, 1, axis=0), np.percentile(sample, 99, axis=0)
    out = cache.folder / "preview"
    out.mkdir(exist_ok=True)
    H, W = cache.meta["image_size"]
    tiles = []
    for i in picks:
        rgb = cv2.resize(pca_rgb(np.asarray(feats[i], dtype=np.float32), lo, hi), (W, H), interpolation=cv2.INTER_NEAREST)
        buf = cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()
        atomic_write_bytes(out / f"{i:04d}.png", buf)
        image = (load_frame_image(scene.frames[i]) * 255 + 0.5).astype(np.uint8)
        if image.shape[:2] != (H, W):
            image = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
        tiles.append(np.concatenate([image, rgb], axis=0))
    cols = 4
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    strip = np.concatenate([np.concatenate(tiles[r : r + cols], axis=1) for r in range(0, len(tiles), cols)], axis=0)
    sheet = Image.new("RGB", (strip.shape[1], strip.shape[0] + 24), (24, 24, 28))
    sheet.paste(Image.fromarray(strip), (0, 24))
    ImageDraw.Draw(sheet).text(
        (6, 5),
        f"{scene.name}: frames (top) and teacher features, first 3 PCA components as RGB (bottom) · {cache.teacher}",
        fill=(235, 235, 235),
    )
    atomic_save_image(out / "sheet.png", sheet)
    return out
