"""What a value parsed from a user's JSON file must be to serve as an id or a number."""
import math
import numbers

INT64 = (-(1 << 63), (1 << 63) - 1)


def is_integer(value) -> bool:
    """An integer (not a bool) that fits int64: ids go into numpy columns and pycocotools."""
    # the exact-type test first: this runs for every entry of millions
    if type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        return INT64[0] <= value <= INT64[1]
    return False


def is_finite_number(value) -> bool:
    """A finite int or float (not a bool): a NaN box would be dropped by detectron2 without a word."""
    if not (type(value) in (int, float) or (isinstance(value, numbers.Real) and not isinstance(value, bool))):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (JSON allows 10**400)
        return False


def finite_numbers(values, count=None) -> bool:
    """A list (or tuple) of ``count`` (any number when None) finite numbers."""
    return (isinstance(values, (list, tuple)) and (count is None or len(values) == count)
            and all(is_finite_number(v) for v in values))
