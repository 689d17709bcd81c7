"""The compression methods' names, defined once (a light module: the command line's parser reads them).

A method joins parts with "+": "kd" distils every student layer from its teacher, "l0" trains
hard-concrete gates under the Lagrangian, "lrf" factorises the weights.
"""

METHODS = ("kd", "l0", "lrf", "kd+l0", "kd+lrf", "kd+lrf+l0")
#: What the study grid compares; "kd" (a dense student of the budget size) is every route's baseline row.
GRID_METHODS = ("lrf", "l0", "kd+lrf", "kd+l0", "kd+lrf+l0")
