"""A Hub repo's config.json, fetched once with huggingface_hub into the normal Hugging Face cache.

planner.models imports this module only for a repo id that is not in the local cache, so a plan
from a shorthand, a profile, a file or a cached repo never loads huggingface_hub. Only config.json
is asked for: never weights, tokenizer or generation_config.json. Environment variables are read
at each call (huggingface_hub reads its own once, at import): HF_HUB_OFFLINE, HF_ENDPOINT,
HF_TOKEN, HF_HUB_CACHE / HF_HOME.
"""

from __future__ import annotations

import os
from pathlib import Path

from planner.errors import InputError
from planner.files import shown

CONFIG_FILE = "config.json"
DEFAULT_ENDPOINT = "https://huggingface.co"
OFFLINE_VALUES = frozenset({"1", "on", "yes", "true"})
"""What huggingface_hub counts as true in HF_HUB_OFFLINE (its `_is_true`)."""

LOCAL_HINT = "or pass a local model folder or config.json"


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) forbids going to the Hub."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in OFFLINE_VALUES


def hub_endpoint() -> str:
    """The Hub to ask: $HF_ENDPOINT (a mirror, or a test server), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def fetch_config(repo_id: str, cache: Path) -> Path | None:
    """The cached path of `repo_id`'s config.json, downloaded into `cache` if need be; None when
    the Hub has no such repo (or `repo_id` cannot be one). InputError for offline, gated,
    unreachable, or a repo without a config.json — each one line saying what to do."""
    if hub_offline():
        raise InputError(
            f"model '{repo_id}' is not in the local Hugging Face cache ({shown(cache)}) and "
            f"HF_HUB_OFFLINE is set: go online once (unset HF_HUB_OFFLINE) so its config.json "
            f"is cached, {LOCAL_HINT}"
        )
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    page = f"{endpoint}/{repo_id}"
    try:
        # One quick try first: hf_hub_download alone retries an unreachable Hub for ~25 s.
        get_hf_file_metadata(hf_hub_url(repo_id, CONFIG_FILE, endpoint=endpoint))
        path = hf_hub_download(
            repo_id,
            CONFIG_FILE,
            cache_dir=cache,
            endpoint=endpoint,
            tqdm_class=_silent_progress_bar(),
        )
    except HFValidationError:  # e.g. `a--b/c`: not a name the Hub can hold
        return None
    except GatedRepoError:  # before RepositoryNotFoundError: it is a subclass
        raise InputError(
            f"model '{repo_id}' is gated on the Hugging Face Hub: accept its licence at {page} "
            f"and set HF_TOKEN (or run `hf auth login`), {LOCAL_HINT}"
        ) from None
    except RepositoryNotFoundError:
        return None
    except (RemoteEntryNotFoundError, RevisionNotFoundError):
        raise InputError(
            f"model '{repo_id}' on the Hugging Face Hub has no {CONFIG_FILE} (a GGUF or "
            f"weights-only repo?); pass the base model's repo id, {LOCAL_HINT}"
        ) from None
    except LocalEntryNotFoundError:
        raise _unreachable(repo_id, endpoint, cache) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "an error"
        raise InputError(
            f"model '{repo_id}': the Hugging Face Hub ({endpoint}) answered {status} for its "
            f"{CONFIG_FILE}; try again later, {LOCAL_HINT}"
        ) from None
    except OSError as error:  # the cache folder cannot be written
        raise InputError(
            f"model '{repo_id}': cannot save its {CONFIG_FILE} in the Hugging Face cache "
            f"({shown(cache)}): {error.strerror or error}; set HF_HUB_CACHE to a writable "
            f"folder, {LOCAL_HINT}"
        ) from None
    except Exception:  # the network itself: no route, DNS, timeout, proxy, TLS
        raise _unreachable(repo_id, endpoint, cache) from None
    return Path(path)


def _unreachable(repo_id: str, endpoint: str, cache: Path) -> InputError:
    return InputError(
        f"model '{repo_id}': cannot reach the Hugging Face Hub ({endpoint}) and its "
        f"{CONFIG_FILE} is not in the local cache ({shown(cache)}); go online once, set "
        f"HF_ENDPOINT to a mirror, {LOCAL_HINT}"
    )


def _silent_progress_bar() -> type:
    """A progress bar that draws nothing: a config.json is a few kB, and stderr stays clean."""
    from huggingface_hub.utils import tqdm

    class SilentProgressBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentProgressBar
