/* h2o 2.2.5 (Debian libh2o, libuv) serving GET /healthz like authd's side port. */
#define H2O_USE_LIBUV 1
#include <stdlib.h>
#include <stdio.h>
#include <uv.h>
#include "h2o.h"
static h2o_globalconf_t config;
static h2o_context_t ctx;
static h2o_accept_ctx_t accept_ctx;
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    static h2o_generator_t generator = { NULL, NULL };
    static char body[] = "{\"status\":\"alive\"}\n";
    (void)self;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
        H2O_STRLIT("application/json"));
    h2o_add_header(
        &req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    req->res.content_length = sizeof body - 1;
    h2o_start_response(req, &generator);
    h2o_iovec_t b = h2o_iovec_init(body, sizeof body - 1);
    h2o_send(req, &b, 1, H2O_SEND_STATE_FINAL);
    return 0;
}
static void on_accept(uv_stream_t *listener, int status)
{
    if (status != 0)
        return;
    uv_tcp_t *conn = h2o_mem_alloc(sizeof *conn);
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free);
    h2o_accept(&accept_ctx, sock);
}
int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 9101;
    h2o_config_init(&config);
    h2o_hostconf_t *host
        = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/healthz", 0);
    h2o_handler_t *h = h2o_create_handler(pc, sizeof *h);
    h->on_req = on_req;
    uv_loop_t loop;
    uv_loop_init(&loop);
    h2o_context_init(&ctx, &loop, &config);
    accept_ctx.ctx = &ctx;
    accept_ctx.hosts = config.hosts;
    uv_tcp_t listener;
    struct sockaddr_in addr;
    uv_tcp_init(&loop, &listener);
    uv_ip4_addr("127.0.0.1", port, &addr);
    if (uv_tcp_bind(&listener, (struct sockaddr *)&addr, 0) != 0
        || uv_listen((uv_stream_t *)&listener, 1024, on_accept) != 0) {
        fprintf(stderr, "listen failed\n");
        return 1;
    }
    return uv_run(&loop, UV_RUN_DEFAULT);
}
