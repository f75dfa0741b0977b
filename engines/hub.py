"""What every engine's Hugging Face download shares: repo id checks and errors a person can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engines.base import EngineError, InputError


def check_repo_id(repo_id: str, hint: str = "") -> str:
    repo_id = repo_id.strip()
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise InputError(f"A Hugging Face repo looks like owner/name{hint}, got {repo_id!r}.")
    return repo_id


@contextmanager
def hub_errors(repo_id: str, filename: str | None = None, offline_hint: str = "") -> Iterator[None]:
    """Turn huggingface_hub's exceptions into InputError (the request is wrong) or EngineError."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    what = f"{repo_id}/{filename}" if filename else repo_id
    # Subclasses first: a gated repo is a RepositoryNotFoundError, a cache miss an EntryNotFoundError.
    try:
        yield
    except GatedRepoError as e:
        raise InputError(f"{repo_id} is gated on Hugging Face: accept its licence there and log in (hf auth login).") from e
    except RepositoryNotFoundError as e:
        raise InputError(f"No model repo {repo_id!r} on the Hugging Face hub (or it is private).") from e
    except LocalEntryNotFoundError as e:
        raise EngineError(f"Cannot reach the Hugging Face hub and {what} is not in the local cache. {offline_hint}".strip()) from e
    except EntryNotFoundError as e:
        raise InputError(f"The repo {repo_id!r} has no file {filename!r}.") from e
    except (HfHubHTTPError, OSError) as e:
        raise EngineError(f"The download of {what} failed: {e}") from e
