/* SPDX-License-Identifier: MIT */
/* portfence: keep server ports out of the kernel's ephemeral range. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct pf_command commands[] = {
        { "check", pf_cmd_check, "[OPTIONS]", "validate the policy; show the verdict for ports" },
        { "ranges", pf_cmd_ranges, "[OPTIONS]", "show the port ranges of known stacks and of this host" },
        { "suggest", pf_cmd_suggest, "[OPTIONS]", "suggest server ports safe on the named stacks" },
        { "learn", pf_cmd_learn, "[OPTIONS]", "run a command, record its binds, propose a policy" },
        { "run", pf_cmd_run, "[OPTIONS]", "run a command with its binds fenced by the LD_PRELOAD shim" },
        { "cgroup", pf_cmd_cgroup, "[OPTIONS]", "fence every process of a cgroup v2 with BPF programs" },
        { "oci-hook", pf_cmd_oci_hook, "[OPTIONS]", "fence a container from an OCI runtime hook (stdin: its state)" },
        { "squat", pf_cmd_squat, "[OPTIONS]", "hold ports as a client would, to reproduce collisions" },
        { "scan", pf_cmd_scan, "[OPTIONS]", "find servers in guarded ranges and clients on server ports" },
        { "export", pf_cmd_export, "[OPTIONS]", "print the policy as a sysctl or as systemd unit settings" },
};

#ifndef PF_HAVE_BPF
int pf_cmd_cgroup(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        pf_error("cgroup", "this portfence was built without BPF support (meson -Dbpf=enabled)");
        return PF_EXIT_USAGE;
}

/* Fails: a runtime then refuses to start the container it could not fence. */
int pf_cmd_oci_hook(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        pf_error("oci-hook", "this portfence was built without BPF support (meson -Dbpf=enabled)");
        return PF_EXIT_USAGE;
}
#endif

static void usage(FILE *f)
{
        fprintf(f, "usage: portfence COMMAND [OPTIONS] [ARGS]\n"
                   "       portfence COMMAND --help\n"
                   "       portfence help COMMAND\n"
                   "       portfence --version | -V\n\ncommands:\n");
        for (size_t i = 0; i < PF_COUNT(commands); i++)
                fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
        fprintf(f, "\nThe policy is read from -c FILE, $PORTFENCE_CONFIG, %s, or the\n"
                   "built-in default (guard this host's ephemeral range, refuse).\n",
                PF_POLICY_SYSTEM);
}

int main(int argc, char **argv)
{
        if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
#ifdef PF_HAVE_BPF
                printf("portfence %s (cgroup enforcer: built)\n", PF_VERSION);
#else
                printf("portfence %s (cgroup enforcer: not built)\n", PF_VERSION);
#endif
                return PF_EXIT_OK;
        }
        return pf_cli_dispatch(NULL, commands, PF_COUNT(commands), argc, argv, usage);
}
