"""What changed between trees, as a layer or as a list: the reverse of apply.

- :mod:`~lamina.layers.diff.changeset`      :func:`diff_trees` (two trees) and
  :func:`diff_overlay_upper` (an overlay upper dir) into a layer, through a
  :class:`~lamina.layers.tar.TarWriter`
- :mod:`~lamina.layers.diff.tree_reader`    :class:`TreeReader`: a tree read through dir
  fds, one ``lstat`` per path, in layer order
- :mod:`~lamina.layers.diff.upper_changes`  :func:`overlay_changes`: ``docker diff``'s
  A/C/D list of a container, read from its overlay upper dir
"""

from __future__ import annotations

from lamina.layers.diff.changeset import diff_overlay_upper, diff_trees
from lamina.layers.diff.tree_reader import TreeReader
from lamina.layers.diff.upper_changes import overlay_changes

__all__ = ["TreeReader", "diff_overlay_upper", "diff_trees", "overlay_changes"]
