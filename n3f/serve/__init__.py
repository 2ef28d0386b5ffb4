"""The click-to-query web page (``n3f serve``)."""
