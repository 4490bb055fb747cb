"""Kubeconfig YAML as both sides of the helper socket parse it: safe types only, and no aliases.

An alias makes a YAML document a graph: ten nested anchors of ten aliases each are one thousand million leaves
in a few hundred bytes. PyYAML shares the nodes, but whatever walks the result as a tree (a deep copy, JSON for
an exec plugin's ``KUBERNETES_EXEC_INFO``, the kubernetes client) pays for every leaf: an 889-byte kubeconfig
cost the helper 460 MB. kubectl never writes aliases, so a kubeconfig with one is refused before it is built.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["YamlAliasError", "load"]


class YamlAliasError(yaml.YAMLError):
    """The document uses an alias (``*name``, or a merge key ``<<: *name``); the text says where."""


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            mark = event.start_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise YamlAliasError(
                f'YAML alias "*{event.anchor}"{where}: aliases are not accepted in a kubeconfig '
                "(kubectl writes none, and they can expand without bound)"
            )
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


def load(text: str | bytes) -> Any:
    """``yaml.safe_load`` that raises ``YamlAliasError`` on the first alias (other YAMLErrors as usual)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
