"""The Containerfile language, pure (text in, typed AST out): ``lexer`` (directives,
continuations, heredocs), ``parser`` and ``instructions`` (the AST, with
``file:line:column`` errors), ``words`` (quoting and ``$VAR`` substitution the executor
applies per step), ``scope`` (ARG/ENV scoping rules)."""
