"""The CLIP-ES labeler's config keys, under cfg.CLIPES (beside xpseudo's, which hold the teacher)."""
import os

from detectron2.config import CfgNode as CN

BACKGROUND_WORDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "metadata", "background_words.json")


def add_clipes_config(cfg):
    """Add the CLIP-ES keys to a config that has xpseudo's (in place)."""
    cfg.CLIPES = CN()
    # --- CLIP (open_clip) ---
    cfg.CLIPES.MODEL = "ViT-B-16"  # an open_clip ViT; the GradCAM and the affinity read its blocks
    cfg.CLIPES.PRETRAINED = "openai"  # open_clip tag, a local checkpoint file, or "none" (random init)
    cfg.CLIPES.MODEL_CONFIG_FILE = ""  # an open_clip architecture JSON to register first (MODEL names it)
    cfg.CLIPES.SEED = 0  # seed of the random init when PRETRAINED is "none"
    cfg.CLIPES.DEVICE = "cpu"
    # Templates to choose from; the one whose class scores are sharpest on the first
    # PROMPT_IMAGES labeled images wins (the mass the softmax over all classes and background puts on
    # each image's own classes, averaged). One template: no choice.
    cfg.CLIPES.PROMPTS = ["a clean origami {}.", "a photo of a {}.", "a rendering of a {}."]
    cfg.CLIPES.PROMPT_IMAGES = 16
    # each class's text embedding is the mean of its name's and its synonyms' (synonym fusion)
    cfg.CLIPES.FUSE_SYNONYMS = True
    # JSON {"words": [...]}: background prompts in the softmax beside the image's classes
    cfg.CLIPES.BACKGROUND_WORDS = BACKGROUND_WORDS
    # --- class maps ---
    # the last AFFINITY_BLOCKS blocks' attention (heads averaged) is the patch affinity; the
    # GradCAM map is propagated AFFINITY_STEPS times through it, inside the box of the map's
    # pixels >= BOX_THRESHOLD (class-aware affinity); 0 steps: the plain GradCAM
    cfg.CLIPES.AFFINITY_BLOCKS = 4
    cfg.CLIPES.AFFINITY_STEPS = 2
    cfg.CLIPES.BOX_THRESHOLD = 0.4
    # --- instances ---
    # a pixel is of class c where c's map (max-normalised) is the largest and >= MAP_THRESHOLD;
    # each connected region of at least MIN_AREA pixels is one instance
    cfg.CLIPES.MAP_THRESHOLD = 0.5
    cfg.CLIPES.MIN_AREA = 16
    # With a teacher (MODEL.WEIGHTS set; the config's MODEL is then an xpseudo teacher): each region
    # takes the class-agnostic teacher mask, among the masks of its top TEACHER_PROPOSALS proposals,
    # that overlaps it best, if their IoU is >= MIN_IOU; otherwise the region is dropped.
    cfg.CLIPES.TEACHER_PROPOSALS = 50
    cfg.CLIPES.MIN_IOU = 0.2
    return cfg
