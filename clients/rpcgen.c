/*
** rpcgen.c — authd-rpcgen, the build-time generator of the typed client
** wrappers: for every method of every service compiled into it, one
** function around authd_client_call, one around authd_client_call_async
** (same name with _async), plus the table authd_client_methods[].
**
**   authd-rpcgen OUT.h OUT.c
**
** It reads protoc-c's service descriptors, not the .proto text, so adding
** an rpc to a service needs no client code: the build relinks this tool
** against the regenerated descriptors and runs it again. Adding a service
** is one line in services[] below (and its proto in authd_proto).
**
** Names: method "VerifyToken" of service "authd.v1.Auth" becomes
** authd_client_verify_token() calling "/authd.v1.Auth/VerifyToken". Message
** descriptor symbols are derived from the full message name with protoc-c's
** own rule (authd.v1.VerifyRequest -> authd__v1__verify_request__descriptor);
** should that rule ever disagree, the generated code fails to compile
** rather than misbehave.
*/
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authd/v1/auth.pb-c.h"

/* A service to generate for, and the protoc-c header that declares it. */
struct service {
    const ProtobufCServiceDescriptor *desc;
    const char *header;
};

/* NULL-terminated: add further services here. */
static const struct service services[] = {
    { &authd__v1__auth__descriptor, "authd/v1/auth.pb-c.h" },
    { NULL, NULL },
};

#define MAX_NAME 256

/*
** camel_to_lower appends protoc-c's lower-case form of one name component:
** an underscore before each upper-case letter that follows a non-upper
** one, then the letter lower-cased ("VerifyRequest" -> "verify_request",
** "GetURL" -> "get_url"). Returns 0, or -1 if out would overflow.
*/
static int camel_to_lower(char *out, size_t cap, const char *in, size_t in_len)
{
    size_t n = strlen(out);
    int was_upper = 1; /* no leading underscore */

    for (size_t i = 0; i < in_len; i++) {
        int up = isupper((unsigned char)in[i]);
        if (up && !was_upper) {
            if (n + 1 >= cap) {
                return -1;
            }
            out[n++] = '_';
        }
        if (n + 1 >= cap) {
            return -1;
        }
        out[n++] = up ? (char)tolower((unsigned char)in[i]) : in[i];
        was_upper = up;
    }
    out[n] = '\0';
    return 0;
}

/*
** full_to_lower maps a dotted full name to protoc-c's C prefix:
** "authd.v1.VerifyRequest" -> "authd__v1__verify_request".
*/
static int full_to_lower(char *out, size_t cap, const char *full)
{
    const char *p = full;

    out[0] = '\0';
    while (*p != '\0') {
        size_t len = strcspn(p, ".");
        if (len > 0) {
            if (out[0] != '\0') {
                if (strlen(out) + 3 > cap) {
                    return -1;
                }
                strcat(out, "__");
            }
            if (camel_to_lower(out, cap, p, len) != 0) {
                return -1;
            }
        }
        p += len;
        if (*p == '.') {
            p++;
        }
    }
    return 0;
}

/* is_name: a C identifier, or with dots a dotted proto full name. */
static int is_name(const char *s, int dots)
{
    if (s == NULL || !(isalpha((unsigned char)s[0]) || s[0] == '_')) {
        return 0;
    }
    for (; *s != '\0'; s++) {
        if (!isalnum((unsigned char)*s) && *s != '_' && !(dots && *s == '.')) {
            return 0;
        }
    }
    return 1;
}

/* One method, with every name the generated code needs. */
struct method {
    char full[MAX_NAME]; /* "/authd.v1.Auth/Verify" */
    char func[MAX_NAME]; /* "authd_client_verify" */
    char in_type[MAX_NAME]; /* "Authd__V1__VerifyRequest" */
    char out_type[MAX_NAME]; /* "Authd__V1__VerifyResponse" */
    char in_desc[MAX_NAME]; /* "authd__v1__verify_request__descriptor" */
    char out_desc[MAX_NAME];
    char out_free[MAX_NAME]; /* "authd__v1__verify_response__free_unpacked" */
};

/*
** describe fills m for method i of svc. Fails on names that would not make
** C identifiers, so a strange descriptor stops the build here.
*/
static int describe(const ProtobufCServiceDescriptor *svc, unsigned i, struct method *m)
{
    const ProtobufCMethodDescriptor *md = &svc->methods[i];
    char lower[MAX_NAME];
    int n;

    if (!is_name(svc->name, 1) || !is_name(md->name, 0) || md->input == NULL || md->output == NULL
        || !is_name(md->input->name, 1) || !is_name(md->output->name, 1)
        || !is_name(md->input->c_name, 0) || !is_name(md->output->c_name, 0)) {
        fprintf(stderr, "authd-rpcgen: %s: unusable names in method %u\n", svc->name, i);
        return -1;
    }
    n = snprintf(m->full, sizeof(m->full), "/%s/%s", svc->name, md->name);
    if (n < 0 || (size_t)n >= sizeof(m->full)) {
        goto too_long;
    }
    snprintf(m->func, sizeof(m->func), "authd_client_");
    if (camel_to_lower(m->func, sizeof(m->func), md->name, strlen(md->name))) {
        goto too_long;
    }
    if ((size_t)snprintf(m->in_type, sizeof(m->in_type), "%s", md->input->c_name)
            >= sizeof(m->in_type)
        || (size_t)snprintf(m->out_type, sizeof(m->out_type), "%s", md->output->c_name)
            >= sizeof(m->out_type)) {
        goto too_long;
    }
    if (full_to_lower(lower, sizeof(lower), md->input->name) != 0
        || (size_t)snprintf(m->in_desc, sizeof(m->in_desc), "%s__descriptor", lower)
            >= sizeof(m->in_desc)) {
        goto too_long;
    }
    if (full_to_lower(lower, sizeof(lower), md->output->name) != 0
        || (size_t)snprintf(m->out_desc, sizeof(m->out_desc), "%s__descriptor", lower)
            >= sizeof(m->out_desc)
        || (size_t)snprintf(m->out_free, sizeof(m->out_free), "%s__free_unpacked", lower)
            >= sizeof(m->out_free)) {
        goto too_long;
    }
    return 0;
too_long:
    fprintf(stderr, "authd-rpcgen: %s.%s: name too long\n", svc->name, md->name);
    return -1;
}

/* same_async: whether plain + "_async" spells other (Verify vs VerifyAsync). */
static int same_async(const char *plain, const char *other)
{
    size_t n = strlen(plain);

    return strncmp(plain, other, n) == 0 && strcmp(other + n, "_async") == 0;
}

/*
** collect describes every method of every service, refusing two methods
** that would get the same C function name (e.g. Verify in two services).
** On success the caller frees *out.
*/
static int collect(const struct service *list, struct method **out, size_t *np)
{
    struct method *ms = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;

    for (const struct service *s = list; s->desc != NULL; s++) {
        if (s->desc->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC) {
            fprintf(stderr, "authd-rpcgen: not a service descriptor\n");
            goto out;
        }
        for (unsigned i = 0; i < s->desc->n_methods; i++) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct method *nm = realloc(ms, ncap * sizeof(*ms));
                if (nm == NULL) {
                    fprintf(stderr, "authd-rpcgen: out of memory\n");
                    goto out;
                }
                ms = nm;
                cap = ncap;
            }
            if (describe(s->desc, i, &ms[n]) != 0) {
                goto out;
            }
            for (size_t j = 0; j < n; j++) {
                if (strcmp(ms[j].func, ms[n].func) == 0 || same_async(ms[j].func, ms[n].func)
                    || same_async(ms[n].func, ms[j].func)) {
                    fprintf(stderr, "authd-rpcgen: %s and %s both map to %s()\n", ms[j].full,
                        ms[n].full, ms[n].func);
                    goto out;
                }
            }
            n++;
        }
    }
    *out = ms;
    *np = n;
    ms = NULL;
    rc = 0;
out:
    free(ms);
    return rc;
}

static void emit_header(FILE *f, const struct service *list, const struct method *ms, size_t n)
{
    fprintf(f,
        "/*\n"
        "** client_rpc.h — GENERATED by authd-rpcgen from the protoc-c "
        "service\n"
        "** descriptors. Do not edit: change the .proto files instead.\n"
        "**\n"
        "** One typed wrapper per RPC around authd_client_call (see "
        "authd/client.h),\n"
        "** one around authd_client_call_async (..._async), and\n"
        "** authd_client_methods[], the table of every RPC.\n"
        "*/\n"
        "#ifndef AUTHD_CLIENT_RPC_H\n"
        "#define AUTHD_CLIENT_RPC_H\n\n"
        "#include \"authd/client.h\"\n");
    for (const struct service *s = list; s->desc != NULL; s++) {
        fprintf(f, "#include \"%s\"\n", s->header);
    }
    fprintf(f,
        "\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
        "/* The number of RPCs in authd_client_methods[]. */\n"
        "#define AUTHD_CLIENT_N_METHODS %zu\n\n"
        "/*\n"
        "** authd_client_methods lists every RPC (name, request and "
        "response\n"
        "** descriptors), in proto order, followed by an all-NULL entry. "
        "Static data.\n"
        "*/\n"
        "extern const authd_client_method "
        "authd_client_methods[AUTHD_CLIENT_N_METHODS + 1];\n",
        n);
    for (size_t i = 0; i < n; i++) {
        const struct method *m = &ms[i];
        fprintf(f,
            "\n/*\n"
            "** %s calls %s.\n"
            "** req is borrowed. Returns st->code, as authd_client_call. "
            "On AUTHD_OK\n"
            "** *resp is owned by the caller, who frees it with\n"
            "**   %s(*resp, NULL);\n"
            "** otherwise *resp is untouched.\n"
            "*/\n"
            "int %s(authd_client *c, const %s *req,\n"
            "    %s **resp, authd_status *st) AUTHD_CLIENT_WUR;\n",
            m->func, m->full, m->out_free, m->func, m->in_type, m->out_type);
        fprintf(f,
            "\n/*\n"
            "** %s_async starts %s and returns at once,\n"
            "** as authd_client_call_async: 0 when under way (cb then runs "
            "exactly\n"
            "** once, on the client's I/O thread), else a status code and cb never "
            "runs.\n"
            "** req is borrowed only during this call. On AUTHD_OK the "
            "callback's\n"
            "** resp is a %s *, owned by the callback,\n"
            "** freed with %s(resp, NULL).\n"
            "*/\n"
            "int %s_async(authd_client *c, const %s *req,\n"
            "    authd_client_cb cb, void *arg) AUTHD_CLIENT_WUR;\n",
            m->func, m->full, m->out_type, m->out_free, m->func, m->in_type);
        fprintf(f,
            "\n/*\n"
            "** %s_as and %s_as_async: the same, with the end\n"
            "** user's authorization in the envelope (authd_client_call_as).\n"
            "*/\n"
            "int %s_as(authd_client *c, const char *authorization,\n"
            "    const %s *req, %s **resp, authd_status *st) AUTHD_CLIENT_WUR;\n"
            "int %s_as_async(authd_client *c, const char *authorization,\n"
            "    const %s *req, authd_client_cb cb, void *arg) AUTHD_CLIENT_WUR;\n",
            m->func, m->func, m->func, m->in_type, m->out_type, m->func, m->in_type);
    }
    fprintf(f,
        "\n#ifdef __cplusplus\n}\n#endif\n\n"
        "#endif /* AUTHD_CLIENT_RPC_H */\n");
}

static void emit_source(FILE *f, const struct method *ms, size_t n)
{
    fprintf(f,
        "/*\n"
        "** client_rpc.c — GENERATED by authd-rpcgen from the protoc-c "
        "service\n"
        "** descriptors. Do not edit: change the .proto files instead.\n"
        "*/\n"
        "#include \"authd/client_rpc.h\"\n\n"
        "const authd_client_method "
        "authd_client_methods[AUTHD_CLIENT_N_METHODS + 1] = {\n");
    for (size_t i = 0; i < n; i++) {
        fprintf(
            f, "    { \"%s\", &%s,\n        &%s },\n", ms[i].full, ms[i].in_desc, ms[i].out_desc);
    }
    fprintf(f, "    { NULL, NULL, NULL },\n};\n");
    for (size_t i = 0; i < n; i++) {
        const struct method *m = &ms[i];
        fprintf(f,
            "\nint\n"
            "%s(authd_client *c, const %s *req,\n"
            "    %s **resp, authd_status *st)\n"
            "{\n"
            "    return authd_client_call(c, \"%s\",\n"
            "        req != NULL ? &req->base : NULL, &%s,\n"
            "        (ProtobufCMessage **) resp, st);\n"
            "}\n",
            m->func, m->in_type, m->out_type, m->full, m->out_desc);
        fprintf(f,
            "\nint\n"
            "%s_async(authd_client *c, const %s *req,\n"
            "    authd_client_cb cb, void *arg)\n"
            "{\n"
            "    return authd_client_call_async(c, \"%s\",\n"
            "        req != NULL ? &req->base : NULL, &%s, cb, arg);\n"
            "}\n",
            m->func, m->in_type, m->full, m->out_desc);
        fprintf(f,
            "\nint\n"
            "%s_as(authd_client *c, const char *authorization,\n"
            "    const %s *req, %s **resp, authd_status *st)\n"
            "{\n"
            "    return authd_client_call_as(c, authorization, \"%s\",\n"
            "        req != NULL ? &req->base : NULL, &%s,\n"
            "        (ProtobufCMessage **) resp, st);\n"
            "}\n",
            m->func, m->in_type, m->out_type, m->full, m->out_desc);
        fprintf(f,
            "\nint\n"
            "%s_as_async(authd_client *c, const char *authorization,\n"
            "    const %s *req, authd_client_cb cb, void *arg)\n"
            "{\n"
            "    return authd_client_call_as_async(c, authorization, \"%s\",\n"
            "        req != NULL ? &req->base : NULL, &%s, cb, arg);\n"
            "}\n",
            m->func, m->in_type, m->full, m->out_desc);
    }
}

/*
** write_file writes through a temporary file renamed into place, so an
** interrupted build never leaves a half-written source behind.
*/
static int write_file(
    const char *path, const struct service *list, const struct method *ms, size_t n, int header)
{
    char tmp[4096];
    FILE *f = NULL;
    int rc = -1;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        fprintf(stderr, "authd-rpcgen: path too long: %s\n", path);
        goto out;
    }
    if ((f = fopen(tmp, "w")) == NULL) {
        fprintf(stderr, "authd-rpcgen: %s: %s\n", tmp, strerror(errno));
        goto out;
    }
    if (header) {
        emit_header(f, list, ms, n);
    } else {
        emit_source(f, ms, n);
    }
    if (ferror(f) != 0 || fclose(f) != 0) {
        f = NULL;
        fprintf(stderr, "authd-rpcgen: %s: write failed\n", tmp);
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "authd-rpcgen: %s: %s\n", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (f != NULL) {
        fclose(f);
    }
    if (rc != 0) {
        unlink(tmp);
    }
    return rc;
}

int main(int argc, char **argv)
{
    struct method *ms = NULL;
    size_t n = 0;
    int rc = 1;

    if (argc != 3) {
        fprintf(stderr, "usage: authd-rpcgen OUT.h OUT.c\n");
        return 2;
    }
    if (collect(services, &ms, &n) != 0 || write_file(argv[1], services, ms, n, 1) != 0
        || write_file(argv[2], services, ms, n, 0) != 0) {
        goto out;
    }
    rc = 0;
out:
    free(ms);
    return rc;
}
