"""Steering inside vLLM: a general plugin (no fork) with the request schema of ``steerlab serve``.

:mod:`~steerlab.serve.vllm.table` holds the per-token maths (no vLLM import);
:mod:`~steerlab.serve.vllm.plugin` patches vLLM's front end and model runner;
:mod:`~steerlab.serve.vllm.endpoint` adds the ``steering`` request field and
``GET /v1/steering/vectors`` to vLLM's OpenAI server; :mod:`~steerlab.serve.vllm.launch` starts
that server for ``steerlab serve --engine vllm``. vLLM itself lives in its own venv
(``make vllm``): it pins its own torch and an older transformers.
"""
