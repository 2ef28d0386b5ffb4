"""Structure from motion with pycolmap: features, matching, mapping, undistortion to a pinhole model.

Runs in its own process (see :mod:`n3f.scene.preprocess.child`): this module uses pycolmap and
must never run where OpenCV is used. ``run_sfm`` writes, inside the output folder::

    images/             undistorted images (what the model refers to)
    sparse/0/           the COLMAP model of those images, PINHOLE cameras (what n3f reads)
    distorted/          database.db (features, matches) and sparse/0/ (the model as mapped,
                        with its lens distortion), to re-run or inspect with COLMAP

Matching: ``exhaustive`` tries every pair (best for up to ~100 images); ``sequential`` matches each
frame with its neighbours in name order (videos) and, with loop detection, also with the most
similar earlier frames; ``vocabtree`` matches each image with its most similar ones (large
unordered sets). Loop detection and ``vocabtree`` need a visual vocabulary; COLMAP downloads a
pretrained one, which is impossible offline, so one is built here from the scene's own SIFT
descriptors (COLMAP's ``vocab_tree_builder`` procedure), which serves retrieval within one scene.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from n3f.errors import PreprocessError, RegistrationError
from n3f.scene.preprocess.options import EXHAUSTIVE_MAX_IMAGES, MATCHERS, MIN_REGISTERED_FRACTION, SfmOptions

VOCAB_MAX_DESCRIPTORS = 200_000  # training sample for the vocabulary (k-means cost grows with it)
VOCAB_MAX_WORDS = 4096
VOCAB_POINTS_PER_WORD = 40  # faiss k-means wants ~39 training points per centroid


def choose_matcher(matcher: str, n_images: int, ordered: bool) -> str:
    """The matcher ``auto`` stands for, given the number of images and whether they are a sequence."""
    if matcher != "auto":
        return matcher
    if n_images <= EXHAUSTIVE_MAX_IMAGES:
        return "exhaustive"
    return "sequential" if ordered else "vocabtree"


def _threads(options: SfmOptions) -> int:
    return options.threads if options.threads > 0 else -1  # COLMAP's -1: all cores


def _device():
    import pycolmap

    return pycolmap.Device.auto


def extract_features(database: Path, image_dir: Path, names: list[str], options: SfmOptions, advance=None) -> None:
    """Import the images into a new database and extract SIFT features.

    Args:
        database: the database file to create.
        image_dir: folder of the images.
        names: file names inside ``image_dir`` (all are imported, in this order).
        options: camera model and sharing, threads.
        advance: optional ``advance(n)`` called as images are done.
    """
    import pycolmap

    mode = pycolmap.CameraMode.SINGLE if options.single_camera else pycolmap.CameraMode.PER_IMAGE
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    pycolmap.Database.open(database).close()
    # Importing all images first gives them their cameras at once; extracting in chunks then
    # only drives the progress bar.
    pycolmap.import_images(database, image_dir, camera_mode=mode, image_names=names, options=reader)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = _threads(options)
    chunk = min(64, max(4, -(-len(names) // 10)))  # about ten updates; each call costs ~0.1 s of set-up
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        pycolmap.extract_features(
            database, image_dir, image_names=part, camera_mode=mode, reader_options=reader, extraction_options=extraction, device=_device()
        )
        if advance:
            advance(len(part))


def build_vocabulary(database: Path, path: Path, options: SfmOptions) -> int:
    """Build a visual vocabulary (COLMAP visual index) from the database's own SIFT descriptors.

    Args:
        database: a database with extracted features.
        path: the index file to write (COLMAP's ``vocab_tree_path``).
        options: threads, seed (which descriptors train it), verbosity.

    Returns:
        The number of visual words.
    """
    import pycolmap

    from n3f.scene.preprocess.stages import silenced_native_stderr

    db = pycolmap.Database.open(database)
    try:
        descriptors = [db.read_descriptors(im.image_id).to_float().data for im in db.read_all_images()]
    finally:
        db.close()
    train = np.concatenate([d for d in descriptors if len(d)]).astype(np.float32)
    if len(train) > VOCAB_MAX_DESCRIPTORS:
        rng = np.random.default_rng(options.seed)
        train = train[np.sort(rng.choice(len(train), VOCAB_MAX_DESCRIPTORS, replace=False))]
    build = pycolmap.VisualIndex.BuildOptions()
    build.num_visual_words = int(np.clip(len(train) // VOCAB_POINTS_PER_WORD, 64, VOCAB_MAX_WORDS))
    build.num_iterations, build.num_rounds, build.num_threads = 20, 1, _threads(options)
    index = pycolmap.VisualIndex.create(128, 64)
    with silenced_native_stderr(not options.verbose):  # faiss warns about small training sets
        index.build(build, pycolmap.FeatureDescriptorsFloat(pycolmap.FeatureExtractorType.SIFT, np.ascontiguousarray(train)))
    index.write(path)
    return int(index.num_visual_words())


def match_features(database: Path, matcher: str, options: SfmOptions, vocabulary: Path | None = None) -> None:
    """Match features between image pairs and verify them geometrically (two-view geometry).

    Args:
        database: a database with extracted features.
        matcher: ``exhaustive``, ``sequential`` or ``vocabtree`` (not ``auto``).
        options: loop detection, threads.
        vocabulary: visual index file for loop detection / vocabtree (see :func:`build_vocabulary`).
    """
    import pycolmap

    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = _threads(options)
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = options.seed
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification, device=_device())
    elif matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.num_threads = _threads(options)
        if vocabulary is not None:
            pairing.loop_detection = True
            pairing.vocab_tree_path = str(vocabulary)
        pycolmap.match_sequential(
            database, matching_options=matching, pairing_options=pairing, verification_options=verification, device=_device()
        )
    elif matcher == "vocabtree":
        pairing = pycolmap.VocabTreePairingOptions()
        pairing.num_threads = _threads(options)
        pairing.vocab_tree_path = str(vocabulary)
        pycolmap.match_vocabtree(
            database, matching_options=matching, pairing_options=pairing, verification_options=verification, device=_device()
        )
    else:
        raise PreprocessError(f"unknown matcher {matcher!r}; use one of {', '.join(MATCHERS[1:])}")


def map_images(database: Path, image_dir: Path, work_dir: Path, options: SfmOptions, on_image=None):
    """Recover camera poses and 3D points; return the model with the most registered images, or None.

    Args:
        database: a database with verified matches.
        image_dir: folder of the images (for the points' colours).
        work_dir: scratch folder for the mapper's models.
        options: mapper, threads, seed.
        on_image: optional ``on_image(n)``, called as the incremental mapper registers n images.

    Returns:
        A ``pycolmap.Reconstruction`` (poses world-to-camera, arbitrary similarity frame) or None.
    """
    import pycolmap

    work_dir.mkdir(parents=True, exist_ok=True)
    if options.mapper == "global":
        if not hasattr(pycolmap, "global_mapping"):
            raise PreprocessError(f"--mapper global needs pycolmap >= 3.12 (installed: {pycolmap.__version__}); use --mapper incremental")
        glob = pycolmap.GlobalPipelineOptions()
        glob.num_threads, glob.random_seed = _threads(options), options.seed
        models = pycolmap.global_mapping(database, image_dir, work_dir, glob)
    else:
        incremental = pycolmap.IncrementalPipelineOptions()
        incremental.num_threads, incremental.random_seed = _threads(options), options.seed
        callbacks = {"initial_image_pair_callback": lambda: on_image(2), "next_image_callback": lambda: on_image(1)} if on_image else {}
        models = pycolmap.incremental_mapping(database, image_dir, work_dir, incremental, **callbacks)
    if not models:
        return None
    return max(models.values(), key=lambda rec: rec.num_reg_images())


def undistort(model_dir: Path, image_dir: Path, out: Path, options: SfmOptions) -> None:
    """Undistort a model and its images to PINHOLE cameras: writes ``out/images`` and ``out/sparse/0``.

    Args:
        model_dir: the mapped (distorted) model.
        image_dir: folder of its images.
        out: the scene folder.
        options: threads.
    """
    import pycolmap

    work = out / "distorted" / "undistortion"
    pycolmap.undistort_images(work, model_dir, image_dir, output_type="COLMAP", num_threads=_threads(options))
    (work / "images").rename(out / "images")
    (out / "sparse").mkdir()
    (work / "sparse").rename(out / "sparse" / "0")
    shutil.rmtree(work)  # stereo/ and scripts for COLMAP's dense reconstruction


def _advice(matcher: str, ordered: bool) -> str:
    """What to try when too few images register."""
    tips = [] if matcher == "exhaustive" else ["--matcher exhaustive (tries every pair of images)"]
    if ordered:
        tips.append(
            "another --fps: higher when the camera moves fast (consecutive frames must share most of their view), "
            "lower when it barely moves (too little baseline between neighbours)"
        )
    tips.append("more overlap between views (each part of the scene seen from several nearby viewpoints)")
    tips.append("sharper, more textured views")
    return "Try: " + "; ".join(tips) + ". Add --verbose to see COLMAP's log."


def run_sfm(image_dir: Path, names: list[str], out: Path, options: SfmOptions, stages=None) -> dict:
    """Run structure from motion on ``names`` in ``image_dir`` and write the scene folder ``out``.

    Args:
        image_dir: folder of the input images.
        names: the image file names to use (in sequence order when ``options.ordered``).
        out: an existing, empty scene folder to fill (see the module docstring for its layout).
        options: see :class:`SfmOptions`.
        stages: optional :class:`~n3f.scene.preprocess.stages.StageProgress`.

    Returns:
        A summary: ``images``, ``registered``, ``registered_names``, ``mean_reprojection_error_px``,
        ``points``, ``matcher``, ``mapper``, ``loop_detection``, ``vocabulary_words``, ``camera``
        (model, width, height, params of the mapped camera), ``seconds`` per stage.

    Raises:
        RegistrationError: no model, or fewer than half of the images registered.
    """
    import pycolmap

    from n3f.scene.preprocess.stages import StageProgress

    options.check()
    stages = stages or StageProgress(quiet=True)
    pycolmap.logging.minloglevel = 0 if options.verbose else 2
    pycolmap.set_random_seed(options.seed)
    out, image_dir = Path(out), Path(image_dir)
    distorted = out / "distorted"
    distorted.mkdir(parents=True, exist_ok=True)
    database = distorted / "database.db"
    matcher = choose_matcher(options.matcher, len(names), options.ordered)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    with stages.stage("extracting SIFT features", total=len(names)) as advance:
        extract_features(database, image_dir, names, options, advance)
    seconds["features"] = time.perf_counter() - start

    vocabulary, words = None, 0
    if matcher == "vocabtree" or (matcher == "sequential" and options.loop_detection):
        start = time.perf_counter()
        with stages.stage("building a visual vocabulary"):
            vocabulary = distorted / "vocabulary.faiss"
            words = build_vocabulary(database, vocabulary, options)
        seconds["vocabulary"] = time.perf_counter() - start

    start = time.perf_counter()
    loop = " with loop detection" if matcher == "sequential" and vocabulary else ""
    with stages.stage(f"matching features ({matcher}{loop})"):
        match_features(database, matcher, options, vocabulary)
    seconds["matching"] = time.perf_counter() - start

    start = time.perf_counter()
    with stages.stage(f"mapping ({options.mapper})", total=len(names) if options.mapper == "incremental" else None) as advance:
        model = map_images(database, image_dir, distorted / "models", options, on_image=advance)
    seconds["mapping"] = time.perf_counter() - start
    shutil.rmtree(distorted / "models", ignore_errors=True)
    if vocabulary is not None:
        vocabulary.unlink()
    registered = model.num_reg_images() if model is not None else 0
    if registered < MIN_REGISTERED_FRACTION * len(names) or model is None:
        what = "no model could be built" if model is None else f"only {registered} of {len(names)} images were registered"
        raise RegistrationError(f"structure from motion failed: {what} (at least half are needed). {_advice(matcher, options.ordered)}")
    model_dir = distorted / "sparse" / "0"
    model_dir.mkdir(parents=True)
    model.write(model_dir)

    start = time.perf_counter()
    with stages.stage("undistorting to a pinhole model"):
        undistort(model_dir, image_dir, out, options)
    seconds["undistortion"] = time.perf_counter() - start

    camera = next(iter(model.cameras.values()))
    return {
        "images": len(names),
        "registered": registered,
        "registered_names": sorted(model.images[i].name for i in model.reg_image_ids()),
        "mean_reprojection_error_px": float(model.compute_mean_reprojection_error()),
        "points": int(model.num_points3D()),
        "matcher": matcher,
        "loop_detection": bool(loop),
        "vocabulary_words": words,
        "mapper": options.mapper,
        "camera": {"model": camera.model_name, "width": camera.width, "height": camera.height, "params": list(map(float, camera.params))},
        "cameras": len(model.cameras),
        "seconds": seconds,
    }


def _handle(request: dict) -> dict:
    from n3f.scene.formats.colmap import read_colmap
    from n3f.scene.preprocess.stages import StageProgress

    options = SfmOptions(**request["options"])
    stages = StageProgress(quiet=options.quiet)
    try:
        summary = run_sfm(Path(request["image_dir"]), request["names"], Path(request["out"]), options, stages)
    finally:
        stages.close()
    scene = read_colmap(Path(request["out"]))  # the folder must load with n3f's own reader
    summary["scene_frames"] = len(scene.frames)
    return summary


def request_for(image_dir: Path, names: list[str], out: Path, options: SfmOptions) -> dict:
    """The JSON request the child process of this module expects (see :func:`_handle`)."""
    return {"image_dir": str(image_dir), "names": list(names), "out": str(out), "options": asdict(options)}


if __name__ == "__main__":
    from n3f.scene.preprocess.child import child_main

    child_main(_handle)
