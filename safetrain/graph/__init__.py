"""Reading a graph: the bottom floor of the house.

Which tensors a tensor depends on, and along which edges a gradient flows
(``_graph``); the coefficient with which a term enters a loss
(``_coefficient``). Nothing here adds to a graph, and nothing here knows
about regularization: every package above asks these two modules.
The modules are private; the public names are ``safetrain``'s.
"""
