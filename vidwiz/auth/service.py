"""Auth and user rules (docs/api.md §2, §3.1): plain async functions over a session; the caller's
unit of work commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from config import Settings
from vidwiz.auth import tokens
from vidwiz.auth.models import User
from vidwiz.auth.passwords import hash_password, verify_password
from vidwiz.db import rowcount
from vidwiz.errors import BadRequest, Conflict, InternalError, NotFound, Unauthorized


def _secret(settings: Settings) -> str:
    if not settings.secret_key:
        raise InternalError("SECRET_KEY is not configured")
    return settings.secret_key


def access_token_for(settings: Settings, user: User) -> str:
    return tokens.issue_access_token(
        _secret(settings),
        user_id=user.id,
        email=user.email,
        name=user.name,
        profile_image_url=user.profile_image_url,
        expiry_hours=settings.jwt_expiry_hours,
    )


async def register(session: AsyncSession, *, email: str, password: str, name: str) -> User:
    # Hashed before the first query: no connection waits on argon2.
    password_hash = await hash_password(password)
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("Email already exists")
    user = User(email=email, name=name, password_hash=password_hash)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent registration won the race
        raise Conflict("Email already exists") from None
    return user


@dataclass(frozen=True)
class Login:
    token: str
    user_id: int
    new_hash: str | None  # to store (`store_password_hash`): the password's hash was a legacy one


async def login(session: AsyncSession, settings: Settings, *, email: str, password: str) -> Login:
    """Check the password (a read: argon2's ~150 ms holds no writer); an upgraded hash, if any,
    is stored by the caller in a unit of work."""
    user = await session.scalar(select(User).where(User.email == email))
    stored = user.password_hash if user is not None and user.password_hash else None
    result = await verify_password(stored, password)
    if user is None or stored is None or not result.ok:
        raise Unauthorized("Invalid email or password")
    # result.new_hash: a legacy Werkzeug hash, or outdated argon2 parameters
    return Login(access_token_for(settings, user), user.id, result.new_hash)


async def store_password_hash(session: AsyncSession, user_id: int, password_hash: str) -> None:
    await session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


async def google_login(session: AsyncSession, settings: Settings, claims: dict[str, Any]) -> str:
    """Sign in with verified Google claims: find by Google id, else link by verified email, else
    create. A concurrent first sign-in with the same identity makes this raise IntegrityError:
    the caller runs it again in a new unit of work, and then finds the row."""
    email = claims.get("email")
    if not email or not isinstance(email, str):
        raise BadRequest("Email is required for Google Sign-In")
    email = email.strip().lower()
    google_id = str(claims.get("sub") or "")
    if not google_id:
        raise Unauthorized("Invalid Google credential")
    user = await _upsert_google_user(
        session,
        google_id,
        email,
        name=claims.get("name") or email.split("@", 1)[0],
        picture=claims.get("picture"),
        # Old tokens carried the flag as a string.
        email_verified=claims.get("email_verified") in (True, "true"),
    )
    return access_token_for(settings, user)


async def _upsert_google_user(
    session: AsyncSession, google_id: str, email: str, *, name: str, picture: str | None, email_verified: bool
) -> User:
    user = await session.scalar(select(User).where(User.google_id == google_id))
    if user is None:
        user = await session.scalar(select(User).where(User.email == email))
        if user is not None:
            # Linking a Google identity to an existing account needs a verified email (D12).
            if not email_verified:
                raise Unauthorized("Invalid Google credential")
            user.google_id = google_id
        else:
            user = User(email=email, google_id=google_id, name=name, profile_image_url=picture)
            session.add(user)
    if not user.name:
        user.name = name
    if picture:
        user.profile_image_url = picture
    await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


TOKEN_EXISTS = "A long-term token already exists. Please revoke the existing token before generating a new one."


async def create_long_term_token(session: AsyncSession, settings: Settings, user_id: int) -> str:
    user = await get_user(session, user_id)
    token = tokens.issue_long_term_token(_secret(settings), user_id=user.id, email=user.email)
    # Set only where none is set, in one statement: of concurrent requests exactly one
    # stores its token, so every 200 carries the token that works.
    if not await _set_long_term_token(session, user_id, token, replacing=False):
        raise BadRequest(TOKEN_EXISTS)
    return token


async def revoke_long_term_token(session: AsyncSession, user_id: int) -> None:
    await get_user(session, user_id)
    if not await _set_long_term_token(session, user_id, None, replacing=True):
        raise NotFound("No long-term token found")


async def _set_long_term_token(session: AsyncSession, user_id: int, token: str | None, *, replacing: bool) -> bool:
    """Set the column only if a token is there (`replacing`) or not; whether the row changed."""
    current = User.long_term_token.is_not(None) if replacing else User.long_term_token.is_(None)
    result = await session.execute(
        update(User)
        .where(User.id == user_id, current)
        .values(long_term_token=token)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


async def update_profile(
    session: AsyncSession, user_id: int, *, name: str | None, ai_notes_enabled: bool | None
) -> User:
    user = await get_user(session, user_id)
    if name is not None:
        user.name = name
    if ai_notes_enabled is not None:
        # Reassign a new dict: in-place mutation of a JSON column is not tracked.
        current = user.profile_data if isinstance(user.profile_data, dict) else {}
        user.profile_data = {**current, "ai_notes_enabled": ai_notes_enabled}
    await session.flush()
    return user
