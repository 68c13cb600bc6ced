/* The nodeless sandbox process: holds a pod's namespaces open, exits 0 on SIGINT or SIGTERM,
 * and reaps the children that are reparented to it (it may be PID 1 of the pod). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int signal_number) {
    (void)signal_number;
    _exit(0);
}

static void on_child(int signal_number) {
    (void)signal_number;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static void install(int signal_number, void (*handler)(int), int flags) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    if (sigaction(signal_number, &action, NULL) < 0) {
        _exit(1);
    }
}

int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        /* `pause -v` and friends: nothing to report, but do not hang a caller. */
        write(STDOUT_FILENO, "nodeless pause\n", 15);
        return 0;
    }
    install(SIGINT, on_terminate, 0);
    install(SIGTERM, on_terminate, 0);
    install(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART);
    for (;;) {
        pause();
    }
    return 42;
}
