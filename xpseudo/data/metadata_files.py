"""Where the metadata JSON files shipped under datasets/metadata/ are."""
import os

METADATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "datasets", "metadata")


def metadata_file(name: str) -> str:
    """Absolute path of ``datasets/metadata/<name>``; xpseudo must be installed from a clone
    (``pip install -e .``) for these files to be found."""
    path = os.path.join(METADATA_DIR, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: xpseudo's metadata files live in the repository's datasets/metadata/; "
            "install xpseudo with `pip install -e .` from a clone"
        )
    return path
