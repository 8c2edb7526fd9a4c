#!/usr/bin/env python
"""Compute class text embeddings with an open_clip text tower and store them with their sidecar.

    python tools/dump_text_embeddings.py --vocabulary FILE --model RN50 --pretrained none|NAME|PATH --output X.npy

Writes X.npy (C x D float32, L2-normalised rows) and X.json (classes in order, ids, prompts, model,
pretrained, dimension, checksum).
"""
import argparse
import sys

from xpseudo.text import DEFAULT_TEMPLATES, ENSEMBLE_TEMPLATES, Vocabulary, compute_text_embeddings, save_text_embeddings
from xpseudo.utils.io import InputError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocabulary", required=True, help="vocabulary JSON, or a COCO/LVIS annotation file")
    parser.add_argument("--model", default="RN50", help="open_clip model name")
    parser.add_argument("--pretrained", default="none", help="open_clip tag (e.g. openai), a local checkpoint, or none (random init)")
    parser.add_argument("--output", required=True, help="X.npy; the sidecar X.json is written beside it")
    parser.add_argument("--prompt", action="append", help='prompt template with "{}" (repeatable); default "a photo of a {}."')
    parser.add_argument("--prompt-ensemble", action="store_true", help="average over a built-in set of templates")
    parser.add_argument("--average-synonyms", action="store_true", help="average the class name with its synonyms")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init (--pretrained none)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not args.output.endswith(".npy"):
        parser.error("--output must end in .npy")
    templates = args.prompt or (ENSEMBLE_TEMPLATES if args.prompt_ensemble else DEFAULT_TEMPLATES)
    try:
        vocabulary = Vocabulary.from_file(args.vocabulary)
    except InputError as e:
        sys.exit(f"error: {e}")
    array = compute_text_embeddings(
        vocabulary, model_name=args.model, pretrained=args.pretrained, templates=templates,
        average_synonyms=args.average_synonyms, seed=args.seed, device=args.device,
    )
    save_text_embeddings(
        args.output, array, vocabulary, model=args.model, pretrained=args.pretrained, prompts=list(templates),
        average_synonyms=args.average_synonyms, seed=args.seed if args.pretrained in ("none", "") else None,
        vocabulary_file=args.vocabulary,
    )
    print(f"wrote {args.output} ({array.shape[0]} classes x {array.shape[1]}) and its sidecar")


if __name__ == "__main__":
    from xpseudo.utils.user_errors import run_reporting_user_errors

    sys.exit(run_reporting_user_errors(main))
