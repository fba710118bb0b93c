"""bayesify: rewrite deterministic PyTorch modules into Bayesian Pyro modules.

The pipeline, one module a stage::

    discover  ->  read  ->  prefilter  ->  index  ->  plan  ->  rewriters  ->  verify  ->  output
    (files)      (bytes)   (cheap text)   (classes    (spec     (libcst        (reparse)  (write,
                                          across      selectors transformers)              diff,
                                          files)      -> sites)                            report)

Importing this package (or :mod:`bayesify.cli`) never imports torch or pyro; only
:mod:`bayesify.runtime`, which rewritten code imports, does.
"""

__version__ = "0.1.0"
