"""Shell-word expansion: quotes, escapes, ``$VAR``, ``${VAR:-x}``, ``${VAR//a/b}``...

Input: ``NAME=value`` lines, a blank line, then the text to expand.
"""

from __future__ import annotations

from lamina.dockerfile import expand, expand_heredoc, expand_words


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    head, _, word = text.partition("\n\n")
    env = {}
    for line in head.splitlines():
        name, _, value = line.partition("=")
        env[name] = value
    escape = "`" if word.startswith("`") else "\\"
    expand(word, env, escape=escape)
    expand_words(word, env, escape=escape)
    expand_heredoc(word, env, escape=escape)
