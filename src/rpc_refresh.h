/*
 * rpc_refresh.h — the Refresh RPC and the refresh tokens Login hands out.
 *
 * A refresh token is opaque to its holder. Inside (69 bytes, 92 base64url
 * characters without padding): a version byte (1), the session id (16),
 * the generation in its family (4, big-endian), 32 random bytes from
 * libsodium, and a 16-byte MAC of the rest under the store's refresh key
 * (authd_store_refresh_tag). The store keeps only a BLAKE2b hash of the
 * whole token (authd_store_refresh_exchange decides what a presented one
 * means); the MAC lets authd refuse a token it never issued before any
 * lookup, and keeps anyone who only knows a session id (every service
 * that saw an access token does) from forging an "old" token that would
 * revoke the session as a replay.
 */
#ifndef AUTHD_RPC_REFRESH_H
#define AUTHD_RPC_REFRESH_H

#include <stdint.h>

#include "call.h"
#include "store.h"

#define AUTHD_REFRESH_SECRET_BYTES 32
#define AUTHD_REFRESH_TOKEN_MAX    128 /* bytes of the text form, NUL included */

/* authd_refresh_token_make writes the text form of the refresh token of
 * session sid at generation gen with random part secret into text
 * (NUL-terminated) and its store hash into hash. Thread-safe. */
void authd_refresh_token_make(const authd_store *st, const uint8_t sid[AUTHD_ID_BYTES],
    uint32_t gen, const uint8_t secret[AUTHD_REFRESH_SECRET_BYTES],
    char text[AUTHD_REFRESH_TOKEN_MAX], uint8_t hash[AUTHD_REFRESH_HASH_BYTES]);

/* authd_handle_refresh is the route handler of /authd.v1.Auth/Refresh:
 * it checks the token's shape and MAC on the calling thread and does the
 * exchange on the write pool. */
void authd_handle_refresh(authd_service *svc, authd_call *call);

#endif
