/* libmicrohttpd 0.9.75 serving GET /healthz with authd's side-port flags. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static enum MHD_Result on_req(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *v, const char *up, size_t *ups, void **cc)
{
    static const char body[] = "{\"status\":\"alive\"}\n";
    static int first;
    if (*cc == NULL) {
        *cc = &first;
        return MHD_YES;
    }
    struct MHD_Response *r
        = MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ok = MHD_queue_response(c, strcmp(url, "/healthz") == 0 ? 200 : 404, r);
    MHD_destroy_response(r);
    return ok;
}
int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 9102, threads = argc > 2 ? atoi(argv[2]) : 1;
    struct MHD_Daemon *d = threads > 1
        ? MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC, port, NULL, NULL, on_req,
            NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads, MHD_OPTION_CONNECTION_LIMIT,
            4096u, MHD_OPTION_END)
        : MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC, port, NULL, NULL, on_req,
            NULL, MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_END);
    if (d == NULL)
        return 1;
    pause();
    return 0;
}
