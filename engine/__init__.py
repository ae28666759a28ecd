"""The engine: decoding and preprocessing images (``imaging``), running a model on a runtime
(``runtime``), reading what its heads say (``inference``), and loading and checking a model
package (``model_package``, ``golden``, ``model_stages``). The box runs it on every image; the
converter runs the same code on the workstation, so a package's validation figures are the
box's own. numpy in, numpy out: no torch."""
