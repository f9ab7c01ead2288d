"""The ``nc-prune`` command (also ``python -m nc_prune``): demo, report, validate, oneshot.

Every error is one line on standard error, prefixed with the command, and a non-zero exit code:
2 for bad input (arguments, files, configs), 1 for anything unexpected (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import lzma
import os
import pickle
import re
import struct
import sys
import traceback
import warnings
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .core.config import WeightPruningConfig
from .core.errors import NcPruneError
from .core.layers import LayerInfo, plan_layers
from .core.patterns.base import get_pattern
from .core.report import SparsityReport
from .core.table import format_table

PROG = "nc-prune"
DEMO_MODEL = "demo-cnn"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
PICKLE_RECORD = "/data.pkl"  # the record of a torch.save archive that holds the pickle


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    _quiet_tensorflow()
    frameworks = ["torch", "keras"] if args.framework == "all" else [args.framework]
    result = run_demo(args.out, quick=args.quick, frameworks=frameworks, seed=args.seed,
                      show_progress=False if args.no_progress else None, plots=not args.no_plots)
    failed = [f for f in frameworks if f in result.skipped and (f == "torch" or args.framework != "all")]
    if failed:
        raise CliError(f"the {failed[0]} part of the demo could not run: {result.skipped[failed[0]]}")
    return 0


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
# The exceptions that loading raises on a damaged file, found by flipping every bit of small checkpoints
# (tests/cli/test_cli.py keeps a deterministic sample). Each tuple guards one call into a library reading the
# file, never our own code, so that a bug of ours still surfaces as exit code 1.
_ZIP_ERRORS = (
    zipfile.BadZipFile,   # bad CRC-32, bad magic numbers, names that differ between directory and header
    ValueError,           # UnicodeDecodeError in a record name, "negative seek value"
    NotImplementedError,  # "zip file version 25.5", "That compression method is not supported"
    RuntimeError,         # a flipped "encrypted" flag: "password required for extraction"
    OSError, EOFError, OverflowError, zlib.error, lzma.LZMAError,  # a flipped compression method, sizes
)
_TORCH_LOAD_ERRORS = _ZIP_ERRORS + (
    pickle.UnpicklingError,  # invalid opcodes; the weights-only unpickler's refusals
    KeyError, IndexError, TypeError, AttributeError, AssertionError, struct.error,  # unpickling a damaged stream
    ImportError, MemoryError,  # --unsafe-load: a damaged global name, a damaged length
)
_KERAS_LOAD_ERRORS = _ZIP_ERRORS + (
    TypeError,  # a class or function Keras cannot locate
    KeyError,   # "There is no item named 'config.json' in the archive"
)
_REJECTED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global|unsupported GLOBAL (\S+) whose module")
_MISSING_KERAS_OBJECT = re.compile(r"Could not (?:locate|deserialize) (\w+) '([^']+)'")


def _reason(exc: BaseException) -> str:
    """``Type: first sentence`` of a library's exception (torch's advice on weights_only left out)."""
    text = " ".join(str(exc).split()).split("WeightsUnpickler error: ")[-1]
    first = re.match(r"(.+?[.!?])(?: |$)", text)
    text = first.group(1) if first else text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _require_zip(path: str, kind: str, why: str) -> None:
    """Refuse a file that is not a zip archive (torch.save and Keras write one), saying when it is a damaged one."""
    try:
        if zipfile.is_zipfile(path):
            return
    except _ZIP_ERRORS as exc:
        raise CliError(f"{path} is damaged ({_reason(exc)})") from None
    with open(path, "rb") as fh:
        if fh.read(4) == b"PK\x03\x04":
            raise CliError(f"{path} is damaged: a zip archive without its central directory (truncated?)")
    raise CliError(f"{path} is not a readable {kind} ({why})")


def _zip_damage(path: str, suffix: str = "") -> Optional[str]:
    """What is wrong with the records of a zip archive whose names end with ``suffix``; None if they read back
    matching their CRC-32 (records stored with a CRC of 0, as torch.save writes after
    ``torch.serialization.set_crc32_options(False)``, cannot be checked and are skipped)."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(suffix) and (info.CRC or not info.file_size):
                    with zf.open(info) as fh:
                        while fh.read(1 << 24):
                            pass
    except _ZIP_ERRORS as exc:
        return _reason(exc)
    return None


def _mid_pruning_note(framework: str, step: Optional[int]) -> str:
    at = "" if step is None else f" at step {step}"
    return f"saved during pruning{at} (masks still attached; nc_prune.{framework}.strip(model) before export)"


def _torch_report(path: str, unsafe: bool) -> Tuple[SparsityReport, List[str]]:
    import torch
    from .torch import sparsity_report
    from .torch.layers import STEP_BUFFER
    _require_zip(path, "torch checkpoint", "torch.save writes zip archives")
    damage = _zip_damage(path, PICKLE_RECORD)  # before unpickling: a damaged pickle can still load, as garbage
    if damage:
        raise CliError(f"{path} is damaged ({damage})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe)
    except _TORCH_LOAD_ERRORS as exc:
        raise _torch_load_error(path, exc, unsafe) from None
    if isinstance(obj, torch.nn.Module):
        return sparsity_report(obj), [f"model {type(obj).__name__}: its Linear and Conv weights"]
    state = _find_state_dict(obj, path)
    from .torch.state import report_from_state
    try:
        planned = report_from_state(state)
    except (KeyError, NcPruneError) as exc:
        raise CliError(f"{path}: its pruning record does not match its tensors ({_reason(exc)})") from None
    if planned is not None:
        step = state.get(STEP_BUFFER)
        return planned, ["state_dict of a model being pruned: its prunable layers, as its pruning record lists them",
                         _mid_pruning_note("torch", None if step is None else int(step))]
    return _weights_report(state, path)


def _weights_report(state: Mapping[str, Any], path: str) -> Tuple[SparsityReport, List[str]]:
    """The report of a state dict without a pruning record: every ``*weight`` tensor of 2 or more dimensions."""
    from .torch.layers import MASK_SUFFIX, SCORE_SUFFIX, STEP_BUFFER
    notes = [f"state_dict: every '*weight' tensor with 2 or more dimensions ({len(state)} tensors in the file)"]
    if STEP_BUFFER in state:
        notes.append(_mid_pruning_note("torch", int(state[STEP_BUFFER])))
    weights = {k[: -len(".weight")] if k.endswith(".weight") else k: v.detach().float().numpy()  # Parameters too
               for k, v in state.items()
               if k.endswith("weight") and v.dim() >= 2 and not k.endswith((MASK_SUFFIX, SCORE_SUFFIX))}
    if not weights:
        raise CliError(f"{path}: no weight with 2 or more dimensions among its keys "
                       f"({', '.join(list(state)[:8])}{'...' if len(state) > 8 else ''})")
    return SparsityReport.from_arrays(weights), notes


def _torch_load_error(path: str, exc: BaseException, unsafe: bool) -> CliError:
    """Why torch.load failed on a file whose pickle passed its CRC-32 check: only a pickle needing Python objects
    beyond tensors is sent to --unsafe-load (or, with it, to the missing code); otherwise the file is damaged."""
    rejected = _REJECTED_GLOBAL.search(str(exc))
    if rejected:
        return CliError(f"{path} holds pickled Python objects, not only tensors (it needs "
                        f"{rejected.group(1) or rejected.group(2)}); loading it runs code stored in the file: "
                        f"pass --unsafe-load if you trust it, or save model.state_dict() instead")
    if unsafe and isinstance(exc, (ImportError, AttributeError)):  # the plain unpickler imports what it names
        return CliError(f"{path}: unpickling it needs code that cannot be imported here ({_reason(exc)}); "
                        f"put the module that defines the model's class on PYTHONPATH")
    damage = _zip_damage(path)
    if damage:
        return CliError(f"{path} is damaged ({damage}); torch.load: {_reason(exc)}")
    return CliError(f"{path} is damaged or not a torch checkpoint: torch.load: {_reason(exc)}")


def _find_state_dict(obj: Any, path: str) -> Dict[str, Any]:
    import torch
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        raise CliError(f"{path}: a dict without a state_dict in it (keys: {', '.join(map(str, list(obj)[:8]))}); "
                       f"expected model.state_dict() or {{'state_dict': ...}}")
    raise CliError(f"{path} holds a {type(obj).__name__}, not a state_dict or a torch model")


def _keras_report(path: str) -> Tuple[SparsityReport, List[str]]:
    keras_backend = _keras_backend("read .keras checkpoints")
    import keras
    pruning_optimizer = keras_backend.PruningOptimizer
    _require_zip(path, ".keras model", ".keras files are zip archives")
    try:
        # compiled only when saved mid-pruning: restoring the optimizer restores its step counter
        mid_pruning = _compiled_with(path, keras.saving.get_registered_name(pruning_optimizer))
        model = keras.saving.load_model(path, compile=mid_pruning)
    except _KERAS_LOAD_ERRORS as exc:
        raise _keras_load_error(path, exc) from None
    notes = [f"Keras model {model.name!r}: its Dense and convolution kernels"]
    if mid_pruning:
        optimizer = getattr(model, "optimizer", None)
        while optimizer is not None and not isinstance(optimizer, pruning_optimizer):  # e.g. LossScaleOptimizer
            optimizer = getattr(optimizer, "inner_optimizer", None)
        built = optimizer is not None and optimizer.built  # not when the model's compile() is its own
        notes.append(_mid_pruning_note("keras", optimizer.prune_step if built else None))
    return keras_backend.sparsity_report(model), notes


def _compiled_with(path: str, registered_name: str) -> bool:
    """Whether the compile config in a .keras file's config.json names the registered class (at any depth)."""
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    return isinstance(config, dict) and f'"{registered_name}"' in json.dumps(config.get("compile_config"))


def _keras_load_error(path: str, exc: BaseException) -> CliError:
    damage = _zip_damage(path)
    if damage:
        return CliError(f"{path} is damaged ({damage})")
    missing = _MISSING_KERAS_OBJECT.search(str(exc))
    if missing:
        module = re.search(r"'module': '([\w.]+)'", str(exc))
        saved_from = f" (it was saved from {module.group(1)})" if module and module.group(1) != "__main__" else ""
        return CliError(f"{path}: Keras cannot find the {missing.group(1)} {missing.group(2)!r} the model was saved "
                        f"with; pass --import MODULE (repeatable) naming the module that defines it and registers it "
                        f"with @keras.saving.register_keras_serializable{saved_from}")
    return CliError(f"{path} is not a loadable .keras model: {_reason(exc)}")


def _keras_backend(what: str):
    _quiet_tensorflow()
    if importlib.util.find_spec("keras") is None:
        raise CliError(f"Keras is not installed; pip install tensorflow-cpu keras to {what}")
    try:
        return importlib.import_module("nc_prune.keras")
    except ImportError as exc:
        raise CliError(f"the nc_prune Keras backend is not available ({exc}); it is needed to {what}") from None


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no C++ info logs


def _import_user_module(name: str, option: str) -> Any:
    """Import the user's module ``name``, given with ``option``; its failure is a problem of the input."""
    _quiet_tensorflow()  # user code may load TensorFlow
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise CliError(f"{option}: cannot import {name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: their input's problem
        raise CliError(f"{option}: importing {name!r} failed: {type(exc).__name__}: {exc}") from None


def _directory_report(path: str) -> Tuple[SparsityReport, List[str], Optional[Dict[str, Any]]]:
    """The report of a directory: what save_pruned wrote (nc_prune.json and safetensors), else the safetensors
    weights of any directory (save_pretrained's). Nothing in it is unpickled; pickle files are refused."""
    names = sorted(os.listdir(path))
    tensors = [n for n in names if n.endswith(".safetensors")]
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("safetensors") is None:
        raise CliError("reading a saved directory needs torch and safetensors; pip install torch safetensors")
    from .torch.saving import PICKLE_SUFFIXES, RECORD_FILE, saved_report
    if RECORD_FILE in names:
        report, meta = saved_report(path)
        what = (f"saved by nc_prune {meta.get('nc_prune_version')} save_pruned ({meta.get('model_class')}, "
                f"{meta.get('storage')} storage in {', '.join(meta.get('weights', []))}"
                + ("" if meta.get("step") is None else f", at pruning step {meta['step']}") + ")")
        notes = [what]
        stored = meta.get("bitmask")
        if stored:
            notes.append(f"bitmask storage: {stored['stored_bytes']:,} bytes of tensors where dense would take "
                         f"{stored['dense_bytes']:,} ({stored['saved_bytes']:,} saved, "
                         f"{stored['saved_bytes'] / stored['dense_bytes']:.1%})")
        differ = [f"{e['name']} ({report[e['name']].zeros:,} zeros in the weights, {e['zeros']:,} recorded)"
                  for e in meta.get("layers", []) if report[e["name"]].zeros != e["zeros"]]
        if differ:
            notes.append(f"weights changed since saving: {', '.join(differ)}")
        return report, notes, meta
    if not tensors:
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise CliError(f"{path} holds no {RECORD_FILE} and no .safetensors file, only pickle files "
                           f"({', '.join(pickles[:4])}); report does not unpickle a directory's files: pass the "
                           f"file itself (nc-prune report {os.path.join(path, pickles[0])}, which reads tensors "
                           f"only), or save the model with nc_prune.torch.save_pruned(model, DIR)")
        raise CliError(f"{path}: no {RECORD_FILE} and no .safetensors weights in it; give a directory "
                       f"nc_prune.torch.save_pruned or save_pretrained wrote, or a checkpoint file")
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    state: Dict[str, Any] = {}
    for name in tensors:
        try:
            state.update(load_file(os.path.join(path, name)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CliError(f"{os.path.join(path, name)} is not a readable safetensors file ({_reason(exc)})") from None
    report, notes = _weights_report(state, os.path.join(path, tensors[0]))
    return report, [f"safetensors weights without an {RECORD_FILE} ({', '.join(tensors)})"] + notes[1:], None


def cmd_report(args: argparse.Namespace) -> int:
    path = args.checkpoint
    if os.path.isdir(path):
        report, notes, meta = _directory_report(path)
        if args.json:
            print(json.dumps(dict(report.to_dict(), **({"saved": meta} if meta else {})), indent=2))
        else:
            print(f"{path}: " + "; ".join(notes))
            print(report)
        return 0
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path}")
    if not path.endswith((".keras",) + TORCH_SUFFIXES):
        raise CliError(f"{path}: unknown checkpoint type; expected a torch file ({', '.join(TORCH_SUFFIXES)}) "
                       f"or a Keras .keras file")
    for module in args.imports:
        _import_user_module(module, f"--import {module!r}")
    report, notes = _keras_report(path) if path.endswith(".keras") else _torch_report(path, args.unsafe_load)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{path}: " + "; ".join(notes))
        print(report)
    return 0


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------
def load_config_file(path: str) -> WeightPruningConfig:
    """A :class:`WeightPruningConfig` from a ``.json``, ``.yaml`` or ``.yml`` file of its keys."""
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path}")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise CliError("reading YAML needs PyYAML: pip install pyyaml (or write the config as JSON)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CliError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        _check_yaml_patterns(data, path)
    elif path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path} is not valid JSON: {exc}") from None
    else:
        raise CliError(f"{path}: a config file must end in .json, .yaml or .yml")
    if not isinstance(data, Mapping):
        raise CliError(f"{path} must hold a mapping of WeightPruningConfig keys, got {type(data).__name__}")
    return WeightPruningConfig.from_dict(data)


def _check_yaml_patterns(data: Any, path: str) -> None:
    """YAML 1.1 reads an unquoted ``2:4`` as the base-60 number 124: say so instead of "not a string"."""
    groups = data.get("pruning_configs") if isinstance(data, Mapping) else None
    for where, d in [("", data)] + [(f"pruning_configs[{i}]: ", g) for i, g in enumerate(groups or [])]:
        value = d.get("pattern") if isinstance(d, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool):
            raise CliError(f"{path}: {where}pattern was read as the number {value}; YAML reads an unquoted N:M "
                           f"pattern in base 60 — quote it, e.g. pattern: \"2:4\"")


def _load_model(spec: str) -> Any:
    if spec == DEMO_MODEL:
        from .demo.torch_part import build_model
        return build_model()
    if ":" not in spec:
        raise CliError(f"--model {spec!r}: use {DEMO_MODEL!r} or 'package.module:factory' (a torch or Keras "
                       f"model, or a function returning one)")
    module_name, _, attr = spec.partition(":")
    obj = _import_user_module(module_name, f"--model {spec!r}")
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise CliError(f"--model {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if callable(obj) and not _is_model(obj):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - any failure of the user's factory is their input's problem
            raise CliError(f"--model {spec!r}: calling {attr}() failed: {type(exc).__name__}: {exc}") from None
    if not _is_model(obj):
        raise CliError(f"--model {spec!r} gave a {type(obj).__name__}, not a torch.nn.Module or Keras model")
    return obj


def _is_model(obj: Any) -> bool:
    for mod, cls in (("torch.nn", "Module"), ("keras", "Model")):
        m = sys.modules.get(mod)
        if m is not None and isinstance(obj, getattr(m, cls)):
            return True
    return False


def _layer_infos(model: Any) -> List[LayerInfo]:
    torch_nn = sys.modules.get("torch.nn")
    if torch_nn is not None and isinstance(model, torch_nn.Module):
        from .torch import find_targets
        return find_targets(model)[0]
    return [w.info() for w in _keras_backend("plan Keras models").find_prunable_weights(model)]


def _plan_rows(config: WeightPruningConfig, infos: List[LayerInfo]) -> Tuple[List[Tuple[str, ...]], List[str]]:
    """One row per prunable layer from the engine's own layer plan: its group, pattern, target and units, or
    why it stays dense (the decisions prepare_pruning makes, not rules re-derived here)."""
    groups = config.groups
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = plan_layers(infos, groups)
    notes = [" ".join(str(w.message).split()) for w in caught]
    rows = []
    for info in infos:
        shape = "x".join(map(str, info.shape))
        decision = plan.decisions[info.name]
        if not decision.pruned:
            rows.append((info.name, info.type_names[0], shape, "-", "-", "-", "-", "left dense: " + decision.reason))
            continue
        g = groups[decision.group]
        units = get_pattern(g).layer_units(info.name, info.shape)
        unit = "x".join(map(str, units.block_size()))
        rows.append((info.name, info.type_names[0], shape, str(decision.group), g["pattern"],
                     f"{g['target_sparsity']:.0%}", f"{units.n_units:,} of {unit}", ""))
    return rows, notes


def _group_lines(config: WeightPruningConfig) -> List[str]:
    lines = []
    for i, g in enumerate(config.groups):
        if g["start_step"] == g["end_step"]:
            when = f"one-shot at step {g['start_step']}"
        else:
            when = (f"steps {g['start_step']}..{g['end_step']} every {g['pruning_frequency']} "
                    f"({g['sparsity_decay_type']} decay)")
        lines.append(f"group {i}: {g['pruning_type']}, pattern {g['pattern']}, target {g['target_sparsity']:.0%} "
                     f"({g['pruning_scope']} scope, per layer {g['min_sparsity_ratio_per_op']:.0%}.."
                     f"{g['max_sparsity_ratio_per_op']:.0%}), {when}; op types {g['pruning_op_types']}, "
                     f"op_names {g['op_names'] or 'all'}, excluded {g['excluded_op_names'] or 'none'}")
    return lines


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config_file(args.config)
    plan = _plan_rows(config, _layer_infos(_load_model(args.model))) if args.model else None
    print(f"{args.config}: valid, {len(config.groups)} pruner group(s)")
    for line in _group_lines(config):
        print("  " + line)
    if plan is None:
        print(f"(pass --model {DEMO_MODEL} or --model package.module:factory to see which layers each group takes)")
        return 0
    rows, notes = plan
    print(f"\nplan for --model {args.model}:")
    print(format_table(("layer", "type", "shape", "group", "pattern", "target", "units", "note"), rows))
    for note in notes:
        print(f"note: {note}")
    return 0


# --------------------------------------------------------------------------------------------
# oneshot
# --------------------------------------------------------------------------------------------
def cmd_oneshot(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("transformers") is None:
        raise CliError("oneshot reads a transformers model directory; pip install transformers")
    if not os.path.isdir(args.model_dir) or not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        raise CliError(f"{args.model_dir} is not a transformers model directory (no config.json in it); give the "
                       f"folder save_pretrained wrote")
    if not os.path.isfile(args.calib):
        raise CliError(f"no such calibration text: {args.calib}")
    if os.path.abspath(args.out) == os.path.abspath(args.model_dir):
        raise CliError("--out must differ from MODEL_DIR: the pruned model is written beside the original")
    import torch
    import transformers
    from .torch import prepare_pruning
    from .torch.batches import text_batches
    parameters = {"sparsity_allocation": "owl"} if args.owl else {}
    config = WeightPruningConfig(pruning_type=args.method, pattern=args.pattern, target_sparsity=args.sparsity,
                                 parameters=parameters,
                                 **({"pruning_scope": "local"} if args.method == "magnitude" else {}))
    from .progress import progress_enabled
    if not progress_enabled():
        transformers.utils.logging.disable_progress_bar()  # its loading bar, off a terminal as ours are
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.model_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"{args.model_dir}: cannot load its tokenizer ({_reason(exc)})") from None
    with open(args.calib, encoding="utf-8") as fh:
        batches = text_batches(tokenizer, fh.read(), args.samples, args.length, args.batch_size)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"{args.model_dir}: cannot load a causal LM ({_reason(exc)})") from None
    model.eval()
    pruning = prepare_pruning(model, config, dataloader=batches, device=args.device, blocks=args.blocks)
    if pruning.calibration is not None:
        print(pruning.calibration)
    print(pruning.report())
    pruning.strip()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out} (loads with AutoModelForCausalLM.from_pretrained)")
    return 0


# --------------------------------------------------------------------------------------------
# parser and entry point
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Prune PyTorch and Keras 3 models with INC-compatible configs.",
                     epilog="Run 'nc-prune COMMAND --help' for a command's options.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", help="train and prune a small CNN in PyTorch and Keras, then report",
                          description="Train a small CNN on scikit-learn's digits, prune it to 4x1 blocks (85%) "
                                      "and to 2:4 while fine-tuning, in PyTorch and in Keras; print the sparsity "
                                      "reports and the accuracy before/after; write checkpoints and PNGs to --out.")
    demo.add_argument("--quick", action="store_true", help="tiny sizes: a run of seconds (for tests and a first look)")
    demo.add_argument("--out", default="nc_prune_demo", metavar="DIR",
                      help="where checkpoints and pictures go (default: %(default)s)")
    demo.add_argument("--framework", choices=("all", "torch", "keras"), default="all",
                      help="which framework(s) to run (default: %(default)s)")
    demo.add_argument("--no-progress", action="store_true",
                      help="no progress bars (also NC_PRUNE_PROGRESS=0; they are off when not on a terminal)")
    demo.add_argument("--no-plots", action="store_true", help="do not write the PNGs")
    demo.add_argument("--seed", type=int, default=0, help="seed of data split, initialisation and batches")
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser("report", help="sparsity table of a saved torch or Keras model",
                            description="Print the per-layer sparsity of a checkpoint: a torch state_dict or "
                                        "model (.pt, .pth, .bin, .ckpt), a Keras model (.keras), or a directory "
                                        "nc_prune.torch.save_pruned wrote (nc_prune.json and safetensors, "
                                        "read without unpickling).")
    report.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="the file to read, or a directory save_pruned (or save_pretrained) wrote")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--unsafe-load", action="store_true",
                        help="allow torch files holding pickled objects (runs code from the file: trusted files only)")
    report.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE before loading (repeatable): the module defining the custom Keras "
                             "classes the model was saved with (keras.saving.register_keras_serializable)")
    report.set_defaults(func=cmd_report)

    validate = sub.add_parser("validate", help="check a pruning config and show its per-layer plan",
                              description="Check a WeightPruningConfig written as JSON or YAML (its keys, as "
                                          "WeightPruningConfig.to_dict() writes them) and print the resolved "
                                          "groups; with --model, also which layer goes to which group.")
    validate.add_argument("config", metavar="CONFIG", help="a .json, .yaml or .yml file")
    validate.add_argument("--model", metavar="NAME_OR_SPEC",
                          help=f"{DEMO_MODEL!r} (the demo's torch CNN) or 'package.module:attr', a torch or Keras "
                               f"model or a function returning one")
    validate.set_defaults(func=cmd_validate)

    oneshot = sub.add_parser("oneshot", help="prune a transformers causal LM at once from a calibration text",
                             description="Load a transformers model directory, cut --samples windows of --length "
                                         "tokens from the calibration text, prune one-shot block by block "
                                         "(SparseGPT, Wanda or per-layer magnitude), print the report and write "
                                         "the pruned model with save_pretrained.")
    oneshot.add_argument("model_dir", metavar="MODEL_DIR", help="what save_pretrained wrote (config.json, weights, "
                                                                "tokenizer)")
    oneshot.add_argument("--method", choices=("sparse_gpt", "wanda", "magnitude"), default="sparse_gpt",
                         help="one-shot method (default: %(default)s)")
    oneshot.add_argument("--pattern", default="1x1", help="'1x1' (each row to the target) or N:M such as '2:4'")
    oneshot.add_argument("--sparsity", type=float, default=0.5, help="target sparsity (N/M for N:M)")
    oneshot.add_argument("--owl", action="store_true", help="spread the target over blocks by outliers (OWL)")
    oneshot.add_argument("--calib", required=True, metavar="FILE.txt", help="calibration text (UTF-8)")
    oneshot.add_argument("--samples", type=int, default=32, help="calibration windows (default: %(default)s)")
    oneshot.add_argument("--length", type=int, default=256, help="tokens per window (default: %(default)s)")
    oneshot.add_argument("--batch-size", type=int, default=4, help="windows per batch (default: %(default)s)")
    oneshot.add_argument("--device", default=None, help="where to compute each block (default: the model's)")
    oneshot.add_argument("--blocks", default=None, help="path of the block list when it is not found")
    oneshot.add_argument("--out", required=True, metavar="DIR", help="where the pruned model is written")
    oneshot.set_defaults(func=cmd_oneshot)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("NC_PRUNE_DEBUG") == "1"
    prog = f"{PROG} {args.command}"
    try:
        return args.func(args)
    except (CliError, NcPruneError, FileNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into one line
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
