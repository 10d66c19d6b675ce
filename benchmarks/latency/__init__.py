"""Issue 11: scan completion to a live image in the browser, timed hop by hop (see README.md)."""
