"""xpseudo's config keys, all under cfg.MODEL.XPM and cfg.XPM."""
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg


def add_xpseudo_config(cfg):
    """Add xpseudo's keys to a detectron2 config (in place)."""
    cfg.MODEL.XPM = CN()
    # --- class text embeddings ---
    # .npy files from tools/dump_text_embeddings.py covering the classes of the datasets used; rows
    # are picked by class name. Empty: computed at start from each dataset's vocabulary and cached.
    cfg.MODEL.XPM.TEXT_EMBEDDINGS = ""
    cfg.MODEL.XPM.TEXT_MODEL = "RN50"  # open_clip model name
    cfg.MODEL.XPM.TEXT_PRETRAINED = "openai"  # open_clip tag, a local checkpoint, or "none" (random init)
    cfg.MODEL.XPM.TEXT_SEED = 0  # seed of the random init when TEXT_PRETRAINED is "none"
    cfg.MODEL.XPM.PROMPTS = ["a photo of a {}."]  # templates averaged per class
    cfg.MODEL.XPM.AVERAGE_SYNONYMS = False  # average each class name with its synonyms
    # Where computed embeddings are cached; empty: $XPSEUDO_CACHE or ~/.cache/xpseudo.
    cfg.MODEL.XPM.EMBEDDING_CACHE_DIR = ""
    # The text model's embedding size (RN50: 1024, ViT-B-*: 512); checked against the embeddings.
    cfg.MODEL.XPM.EMBEDDING_DIM = 1024

    # --- open-vocabulary box classifier ---
    # logits = cosine(region embedding, class embedding) / TEMPERATURE; background has a learned embedding
    cfg.MODEL.XPM.CLS_TEMPERATURE = 0.05
    # weight of the background class in the classification cross-entropy, teacher and student
    # (the authors' release: 0.2; 1.0 is detectron2's plain cross-entropy)
    cfg.MODEL.XPM.BACKGROUND_WEIGHT = 1.0
    # What the weighted classification loss is divided by: "class_weights" (the sum of the RoIs'
    # class weights, a weighted mean) or "rois" (the number of sampled RoIs, the authors' release).
    # The two agree when BACKGROUND_WEIGHT is 1.
    cfg.MODEL.XPM.CLS_LOSS_NORMALIZER = "class_weights"
    # Keep the region-to-text projection as MODEL.WEIGHTS gives it: the authors' teacher starts
    # from the grounding pretraining (XPMGroundingPretrainer) with the projection frozen.
    cfg.MODEL.XPM.FREEZE_PROJECTION = False
    # Classes the classifier is trained on: "base" (the split's base classes; novel ones are never
    # pushed towards background) or "all" (every class of the training dataset).
    cfg.MODEL.XPM.TRAIN_CLASSES = "base"

    # --- caption grounding (stage 1 of XPM) ---
    cfg.MODEL.XPM.GROUNDING = CN()
    cfg.MODEL.XPM.GROUNDING.ENABLED = True
    cfg.MODEL.XPM.GROUNDING.LOSS_WEIGHT = 1.0
    # temperature of region-word similarities and of the image-caption contrastive logits
    cfg.MODEL.XPM.GROUNDING.TEMPERATURE = 0.1
    # Regions of a caption image: "proposals" (xpseudo's default) = the whole image plus the top
    # NUM_REGIONS RPN proposals; "grid" (the authors' stage-1 pretraining) = the cells of the
    # backbone feature map GRID_FEATURE (empty: the ROI heads' coarsest input, FPN's p5 / C5's
    # stride 32), NUM_REGIONS of them kept at random per image (the authors: 100).
    cfg.MODEL.XPM.GROUNDING.REGIONS = "proposals"
    cfg.MODEL.XPM.GROUNDING.GRID_FEATURE = ""
    cfg.MODEL.XPM.GROUNDING.NUM_REGIONS = 32
    # "averaged" (xpseudo's default): one cross-entropy per direction on the mean of the word-side
    # and region-side scores; "xpm" (the authors' release): the two kept apart, four cross-entropies
    # summed; "noun_to_region": one way, each word's best own region against the other images'
    # regions, so regions no word names are left alone (see xpseudo.losses.grounding)
    cfg.MODEL.XPM.GROUNDING.LOSS = "averaged"
    # The contrast's batch: the caption images of all processes (True), or of each process on its
    # own (False, the authors' release: 8 images per GPU)
    cfg.MODEL.XPM.GROUNDING.CONTRAST_ACROSS_PROCESSES = True
    # Caption words grounded: "vocabulary" = mentions of the caption dataset's classes (synonyms
    # and plurals included), each embedded as its class; "all" = those plus every other caption word
    # outside a stop list (xpseudo.text.STOP_WORDS) used by at least MIN_WORD_COUNT images, embedded
    # with the same text model and prompts (computed and cached, even when TEXT_EMBEDDINGS is set);
    # "one_caption" (the authors' stage 1) = every word of one caption drawn at random per image and
    # step (stop words included; MAX_WORDS not applied), images kept whatever they name.
    cfg.MODEL.XPM.GROUNDING.WORDS = "vocabulary"
    cfg.MODEL.XPM.GROUNDING.MIN_WORD_COUNT = 5
    # at most this many distinct words per image, class words first
    cfg.MODEL.XPM.GROUNDING.MAX_WORDS = 16

    # --- robust student (stage 4 of XPM) ---
    cfg.MODEL.XPM.STUDENT = CN()
    # mask loss on pseudo instances (xpseudo.losses.MASK_LOSSES): "noise_aware" (sampled logits
    # mu + sigma * eps, XPM), "bce" (plain, like ground truth), "confidence_guided" (CLIP-ES's CGL:
    # pixels whose teacher mask probability was in XPM.PSEUDO_LABELS.UNCERTAIN_BAND are ignored;
    # needs pseudo labels made with that band) or "response_scaling" (after URN: BCE weighted by
    # 1 - the spread of sigmoid(mu + log s) over the odds factors s in RESPONSE_SCALES)
    cfg.MODEL.XPM.STUDENT.MASK_LOSS = "noise_aware"
    cfg.MODEL.XPM.STUDENT.RESPONSE_SCALES = (0.25, 4.0)
    # False: the older spelling of MASK_LOSS "bce"
    cfg.MODEL.XPM.STUDENT.NOISE_AWARE = True
    # samples of eps averaged in the likelihood (1 = BCE on one sampled logit, the authors' release:
    # sigma then shrinks for right and wrong labels alike)
    cfg.MODEL.XPM.STUDENT.NUM_SAMPLES = 8
    # iteration after which the sigma branch stops training (-1: never)
    cfg.MODEL.XPM.STUDENT.SIGMA_FREEZE_ITER = -1
    # initial log-variance of the sigma branch (sigma = exp(SIGMA_INIT / 2)); the authors' release
    # initialises the branch's bias to 1.0 (sigma 1.65)
    cfg.MODEL.XPM.STUDENT.SIGMA_INIT = -2.0
    # the sigma branch: "conv_deconv" (3x3 conv, its own deconvolution, 1x1 conv on the detached
    # features before the mask head's deconvolution) or "linear" (the authors' release: one 1x1
    # conv on the detached features after it, weights N(0, 0.001^2))
    cfg.MODEL.XPM.STUDENT.SIGMA_BRANCH = "conv_deconv"
    # the mask loss over a batch's positive RoIs: "all", one mean; "per_source", the mean over
    # pseudo objects plus the mean over ground-truth ones (the authors' release, whose student
    # runs a pseudo pass and a ground-truth pass)
    cfg.MODEL.XPM.STUDENT.MASK_LOSS_MEANS = "all"
    # re-weighting of pseudo objects' classification and box losses by their mask uncertainty:
    # "object" (WEIGHT_SCALE / the object's mean sigma), "batch" (WEIGHT_SCALE / the batch's mean
    # sigma; the authors' release, with WEIGHT_SCALE 0.01), "agreement" (the IoU of the student's
    # mask with the pseudo mask), "class_probability", "agreement_probability", the last two
    # relative to their class's running mean ("class_probability_relative",
    # "agreement_probability_relative", the default: docs/ABLATIONS.md, section K), or "none"
    cfg.MODEL.XPM.STUDENT.WEIGHTING = "agreement_probability_relative"
    cfg.MODEL.XPM.STUDENT.WEIGHT_SCALE = 0.5
    # "agreement", "class_probability", "agreement_probability": the weight is the student's own
    # view of each pseudo object (docs/DESIGN.md), blended in from 1 over these iterations
    cfg.MODEL.XPM.STUDENT.WEIGHT_WARMUP_ITERS = 200
    # "*_relative": momentum of each class's running mean signal, and the largest weight an object
    # gets relative to that mean
    cfg.MODEL.XPM.STUDENT.CLASS_MEAN_MOMENTUM = 0.9
    cfg.MODEL.XPM.STUDENT.RELATIVE_WEIGHT_MAX = 2.0
    # True: each pseudo object's weight (WEIGHTING) also scales its mask loss, not only its class
    # and box losses
    cfg.MODEL.XPM.STUDENT.WEIGHT_MASK_LOSS = False
    # factor on every pseudo object's weight: 2 puts the relative weights (mean about 1) at the
    # scale "object" gives pseudo objects on shapes (0.5 / sigma: 1.4 rising to 2.5-3.2); with
    # "object" or the authors' "batch", 1 keeps their own scale
    cfg.MODEL.XPM.STUDENT.PSEUDO_LOSS_WEIGHT = 2.0
    # the authors freeze the backbone and the RPN in this stage
    cfg.MODEL.XPM.STUDENT.FREEZE_BACKBONE = False
    cfg.MODEL.XPM.STUDENT.FREEZE_RPN = False

    # --- pixel-to-prototype contrast on the mask features (NoiseAwareMaskHead; student, or a
    # teacher given that head with MASK_LOSS "bce"); xpseudo.losses.prototype_contrast ---
    cfg.MODEL.XPM.PROTOTYPE_CONTRAST = CN()
    cfg.MODEL.XPM.PROTOTYPE_CONTRAST.WEIGHT = 0.0  # 0: off
    cfg.MODEL.XPM.PROTOTYPE_CONTRAST.TEMPERATURE = 0.1
    # prototypes are momentum averages of their class's pixels (background: the RoI's other pixels)
    cfg.MODEL.XPM.PROTOTYPE_CONTRAST.MOMENTUM = 0.99
    # anchor pixels per class and step, this fraction of them the least similar to their prototype
    cfg.MODEL.XPM.PROTOTYPE_CONTRAST.PIXELS_PER_CLASS = 256
    cfg.MODEL.XPM.PROTOTYPE_CONTRAST.HARD_FRACTION = 0.5
    # pseudo masks' pixels count too (outside their uncertain band, when the labels have one)
    cfg.MODEL.XPM.PROTOTYPE_CONTRAST.PSEUDO = True

    cfg.XPM = CN()
    # YAML/JSON files declaring datasets (xpseudo.data.dataset_files, docs/CUSTOM_DATASETS.md),
    # registered whenever a config is loaded, so every tool, pipeline stage and Slurm job knows
    # them. Relative paths are against the working directory; they are stored absolute.
    cfg.XPM.DATASET_FILES = ()
    # Caption-only datasets trained alongside DATASETS.TRAIN (which holds the annotated ones).
    cfg.XPM.CAPTION_DATASETS = ()
    # Caption images per batch across all workers, in addition to SOLVER.IMS_PER_BATCH annotated ones
    # (each batch holds both kinds, so every iteration has detection and grounding losses).
    cfg.XPM.CAPTION_IMS_PER_BATCH = 4
    # The student's pseudo labels (pseudo_labels.json of tools/generate_pseudo_labels.py): registered
    # at start-up as dataset XPM.PSEUDO_DATASET and merged image by image into DATASETS.TRAIN, every
    # instance from it flagged as pseudo. Empty: no pseudo labels (the teacher).
    cfg.XPM.PSEUDO_LABELS_FILE = ""
    cfg.XPM.PSEUDO_DATASET = "xpm_pseudo_labels"
    # The captioned dataset the pseudo labels were made on: their file names are relative to its
    # image_root and their category ids are its ids. Empty: the "dataset" recorded in the
    # provenance.json beside the file, else DATASETS.TRAIN[0] (when the two share their images).
    cfg.XPM.PSEUDO_LABELED_DATASET = ""
    # How often an image that has pseudo labels only is sampled per epoch, relative to one with
    # ground truth (detectron2's RepeatFactorTrainingSampler; fractions are sampled stochastically).
    # A negative value balances the two sources: (ground-truth images) / (pseudo-only images), so
    # that e.g. Open Images masks and the far more numerous Conceptual Captions pseudo labels each
    # make about half of the samples. Multiplies LVIS-style category repeat factors when
    # DATALOADER.SAMPLER_TRAIN is "RepeatFactorTrainingSampler".
    cfg.XPM.PSEUDO_REPEAT_FACTOR = 1.0

    # --- cross-modal pseudo-labeling (stage 3 of XPM; tools/generate_pseudo_labels.py) ---
    cfg.XPM.PSEUDO_LABELS = CN()
    # The dataset pseudo-labeled: captioned, or registered with weak labels (e.g. "shapes_train_boxes").
    # Empty: the first of XPM.CAPTION_DATASETS. tools/generate_pseudo_labels.py --dataset overrides it.
    cfg.XPM.PSEUDO_LABELS.DATASET = ""
    # Which images are labeled: "all" of the dataset, or "annotated": only those that also hold an
    # annotation in DATASETS.TRAIN, matched by file name (the authors' release labels only the
    # base-annotated COCO images)
    cfg.XPM.PSEUDO_LABELS.IMAGES = "all"
    # Which classes named by captions get pseudo masks: "all", "novel" or "base" (of the dataset's split).
    cfg.XPM.PSEUDO_LABELS.CLASSES = "all"
    # regions per caption word, best first (XPM: 1)
    cfg.XPM.PSEUDO_LABELS.TOP_K = 1
    # How a proposal is scored for a class word, tag or point: "classifier" = the teacher's
    # classifier as a softmax over the image's named classes, the base classes it was trained on and
    # background, so that proposals that are no object (or an object of a base class) lose; the
    # probability is the confidence. "similarity" = cos(region, word), the authors'. Measured on
    # shapes (docs/ABLATIONS.md): novel AP50 of caption labels 9.0 -> 17.6.
    cfg.XPM.PSEUDO_LABELS.SCORE = "classifier"
    # With "similarity": confidence = sigmoid(cos(region, word) / SCORE_TEMPERATURE). The authors'
    # release has no temperature (1.0; on unnormalised embeddings). At 0.1 every pick's confidence
    # is ~0.99, so MIN_SCORE selects nothing; at 1.0 it lies in sigmoid([-1, 1]) = [0.27, 0.73].
    cfg.XPM.PSEUDO_LABELS.SCORE_TEMPERATURE = 0.1
    # With "similarity": False scores the region embedding as projected, not L2-normalised, against
    # the normalised word (the authors' release), so regions of large norm win picks.
    cfg.XPM.PSEUDO_LABELS.NORMALIZE_REGIONS = True
    # A caption's number words and plurals ask for that many regions per class word ("two stars" ->
    # 2, "stars" or "several stars" -> PLURAL_COUNT), instead of TOP_K (the authors': False, one
    # region per word). Measured with "classifier": novel AP50 17.6 -> 20.9.
    cfg.XPM.PSEUDO_LABELS.COUNTS = True
    cfg.XPM.PSEUDO_LABELS.PLURAL_COUNT = 2
    # A pick may overlap the word's earlier picks (with ASSIGNMENT exclusive: any word's) by at most
    # this box IoU (1.0: no suppression)
    cfg.XPM.PSEUDO_LABELS.PICK_IOU = 0.5
    # How the words of an image share its regions: "per_word", each word picks on its own (the
    # authors'); "exclusive", pairs taken best confidence first over all words, one object per pick
    # (a region overlapping any earlier pick, of any word, by more than PICK_IOU is passed over), so
    # a novel word does not take the base object its caption also names. Measured on shapes
    # (docs/ABLATIONS.md): caption novel AP50 20.9 -> 28.1 (PICK_IOU 0.5).
    # DEDUPLICATE has nothing left to do with it.
    cfg.XPM.PSEUDO_LABELS.ASSIGNMENT = "exclusive"
    # pairs whose confidence is below this are dropped (the authors': 0, no threshold)
    cfg.XPM.PSEUDO_LABELS.MIN_SCORE = 0.0
    # a region picked by several words is kept only for the word that scores it highest
    cfg.XPM.PSEUDO_LABELS.DEDUPLICATE = False
    # apply the teacher's class-agnostic box regression to the picked proposal, as the authors'
    # release does (its post-processor, without NMS); False keeps the raw proposal
    cfg.XPM.PSEUDO_LABELS.REFINE_BOXES = True
    cfg.XPM.PSEUDO_LABELS.MASK_THRESHOLD = 0.5
    # (low, high): also store, per pseudo mask, the pixels whose teacher mask probability lies in
    # [low, high] as an RLE "uncertain_segmentation" (what MODEL.XPM.STUDENT.MASK_LOSS
    # confidence_guided ignores). Empty: not stored.
    cfg.XPM.PSEUDO_LABELS.UNCERTAIN_BAND = ()
    # images per teacher forward pass
    cfg.XPM.PSEUDO_LABELS.IMS_PER_BATCH = 4
    return cfg


def load_config(config_file: str, opts=(), add_config=None, **overrides):
    """detectron2's defaults + xpseudo's keys (+ a project's: ``add_config(cfg)``), then
    ``config_file``, the KEY VALUE list ``opts`` and ``overrides`` ({"MODEL.WEIGHTS": ""}, for
    settings a tool imposes). Not frozen."""
    cfg = get_cfg()
    add_xpseudo_config(cfg)
    if add_config is not None:
        add_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts) + [x for item in overrides.items() for x in item])
    register_config_datasets(cfg)
    return cfg


def register_config_datasets(cfg) -> None:
    """Register the datasets of ``cfg.XPM.DATASET_FILES`` (paths made absolute in ``cfg``)."""
    from xpseudo.data.dataset_files import parse_file_list, register_dataset_files

    files = tuple(os.path.abspath(p) for p in parse_file_list(cfg.XPM.DATASET_FILES))
    cfg.XPM.DATASET_FILES = files
    register_dataset_files(files)
