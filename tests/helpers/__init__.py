"""Test helpers shared by every test package.

Import them as ``from helpers.tree import build_tree`` (the ``tests`` directory is put on
``sys.path`` by the conftest of the test package that uses them).
"""
