"""``srpose triton MODEL --out REPO``: argv -> :class:`~srpose.serve.repository.RepositoryOptions` ->
``write_repository`` -> what was written, how to serve it, and (engines) which Triton containers run it."""
from __future__ import annotations

import argparse

from ._args import add_json_arg, count, image_graph_of

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_file", metavar="MODEL",
                   help="an exported .onnx graph, or a TensorRT .engine/.plan with its sidecar .json")
    p.add_argument("--out", required=True, metavar="REPO", help="the model repository folder (created; other models "
                   "in it are kept)")
    p.add_argument("--name", default=None, help="the ensemble's model name (default: the model's name)")
    p.add_argument("--runtime", choices=("tensorrt", "onnxruntime", "python-onnxruntime"), default=None,
                   help="the network model: tensorrt_plan (engines), onnxruntime_onnx (Triton's ONNX Runtime backend) "
                        "or python-onnxruntime (ONNX Runtime in the python backend, for servers without the ONNX "
                        "Runtime backend); default: by file type")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="top-down graphs without the flip test: the ensemble runs the mirrored crops too (default: the "
                        "config's test_cfg.flip_test)")
    p.add_argument("--max-queue-delay-us", type=count(0), default=2000, metavar="US",
                   help="dynamic batching: longest wait for more requests to batch (default: 2000)")
    p.add_argument("--instances", type=count(1), default=1, metavar="N", help="network model instances (default: 1)")
    p.add_argument("--python-instances", type=count(1), default=1, metavar="N",
                   help="instances of the pre- and post-processing models (default: 1)")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default=None,
                   help="where the network runs (default: gpu for engines; auto for onnxruntime, a GPU instance with "
                        "Triton's TensorRT accelerator where the server has a GPU; cpu for python-onnxruntime)")
    p.add_argument("--crop-input", action="store_true",
                   help="serve a top-down crop .onnx graph as it is (default: as its image-to-keypoints graph, which "
                        "crops, flips and decodes in the network; python models then only decode the image)")
    p.add_argument("--threads", type=count(1), default=None, metavar="N",
                   help="python-onnxruntime: ONNX Runtime intra-op threads (default: ONNX Runtime's)")
    p.add_argument("--force", action="store_true", help="replace models of the same names in REPO")
    add_json_arg(p)


def _rows(report: "object") -> list[tuple[str, str, str]]:
    """(model, kind, what it does) of each model of the repository."""
    r, m = report, report.models  # type: ignore[attr-defined]
    people = "postprocess" not in m
    if people:
        pre = "decode the image, check the boxes"
        net = "crop, normalise, flip test, decode to image pixels, rescoring; one image a request"
    else:
        pre = (f"decode, {'crops' if r.task == 'top-down' else 'resize'} to {r.input_size[0]}x{r.input_size[1]}"
               + ("" if r.image_input else ", normalise"))
        net = f"max_batch_size {r.max_batch_size}, preferred {r.preferred_batch_sizes}, queue delay " \
              f"{r.max_queue_delay_us} us"
    rows = [(m["ensemble"], "ensemble", "send requests here"), (m["preprocess"], "python", pre),
            (m["network"], r.network_platform, net)]
    if not people:
        rows.append((m["postprocess"], "python", "decode to image pixels, rescoring"))
    return rows


def run(args: argparse.Namespace) -> int:
    from srpose._io import atomic_write_json, check_out_dir, check_out_file
    from srpose.serve.environment import container_command
    from srpose.serve.repository import RepositoryOptions, write_repository

    import tempfile
    from pathlib import Path

    options = RepositoryOptions(
        out=args.out, name=args.name, runtime=args.runtime, flip=args.flip,
        max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
        python_instances=args.python_instances, device=args.device, threads=args.threads, force=args.force)
    options.check()
    check_out_dir(args.out, option="--out")
    check_out_file(args.json_out, option="--json")
    with tempfile.TemporaryDirectory(prefix="srpose-triton-") as tmp:
        image = image_graph_of(args.model_file, Path(tmp) / "image.onnx", crop_input=args.crop_input,
                               flip=args.flip)
        report = write_repository(image or args.model_file, options,
                                  source=args.model_file if image else None)
    m = report.models
    flip = ("the ensemble runs the mirrored pass" if report.server_flip else
            "in the graph" if report.flip_in_graph else "off")
    per = f", at most {report.max_persons} persons per request" if report.max_persons else ""
    print(f"wrote the Triton model repository {report.repo} ({report.task}, flip test {flip}{per})")
    if report.wrapped:
        print(f"served as the image-to-keypoints graph of {report.wrapped} (--crop-input serves the crop graph)")
    w = max(len(v) for v in m.values())
    for name, kind, what in _rows(report):
        print(f"  {name:<{w}}  {kind:<16}  {what}")
    print(f"the server's Python needs: {', '.join(report.requirements)} ({report.repo}/requirements.txt)")
    if report.tensorrt is not None:
        print(report.tensorrt["message"])
    release = report.tensorrt["containers"][-1] if report.tensorrt and report.tensorrt["containers"] else "24.10"
    if report.runtime == "python-onnxruntime":
        print(f"serve it here:      srpose serve {report.repo}")
    else:  # the CPU server of the nvidia-pytriton wheel has only the python backend
        print(f"serve it here:      srpose serve {report.repo}  (with a tritonserver that runs "
              f"{report.network_platform} models; the nvidia-pytriton one needs --runtime python-onnxruntime)")
    print(f"or in a container:  {container_command(report.repo, release)}")
    if args.json_out:
        atomic_write_json(args.json_out, report.to_dict())
        print(f"report written to {args.json_out}")
    return 0
