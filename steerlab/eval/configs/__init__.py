"""Study configs: what each study measures with, declared once.

One module per study, each a dataclass whose fields say what they are (:mod:`.fields`): the
run settings ``run.json`` records, the options ``steerlab eval NAME`` offers (derived from
the fields by :mod:`steerlab.cli.study_command`) and their help. The study itself (``run``)
lives in :mod:`steerlab.eval.protocols`; these modules import nothing heavy, so the command
line is built without torch.

Example:
    >>> from steerlab.eval.configs.capabilities import CapabilitiesConfig
    >>> CapabilitiesConfig(out="runs/cap", vector="v.safetensors", layers="12").settings()["values"]
    [-0.4, 0.0, 0.4]
"""
