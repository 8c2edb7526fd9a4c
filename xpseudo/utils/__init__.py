from .io import InputError, atomic_write, atomic_write_json, load_json, require_keys

__all__ = ["InputError", "atomic_write", "atomic_write_json", "load_json", "require_keys"]
