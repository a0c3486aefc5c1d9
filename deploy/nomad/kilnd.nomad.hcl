# kilnd on every Nomad client that has /dev/kvm (a system job: one per
# client, kept alive by Nomad). raw_exec, because kilnd needs root and
# /dev/kvm for the VMMs' jails (enable raw_exec in the client's plugin
# config). The binaries are installed under /usr/local/libexec/kiln on each
# client (deploy/README.md). A Nomad job file holds one job: kiln-router is
# deploy/nomad/kiln-router.nomad.hcl.
#
#   nomad var put nomad/jobs/kilnd tokens_json=@tokens.json admin_token=@admin-token
#   nomad job run deploy/nomad/kilnd.nomad.hcl
job "kilnd" {
  type = "system"

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # Mark KVM clients in their config: client { meta { kiln_kvm = "true" } }
  constraint {
    attribute = "${meta.kiln_kvm}"
    value     = "true"
  }

  group "kilnd" {
    network {
      port "api" {
        static = 8420
      }
    }

    service {
      name     = "kilnd"
      port     = "api"
      provider = "consul"

      # kiln-router's hosts file names each host by this id (the template in
      # kiln-router.nomad.hcl); kilnd puts the same id in its sandbox ids.
      meta {
        host_id = "${node.unique.name}"
      }

      check {
        name     = "kilnd health"
        type     = "http"
        path     = "/v1/health"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "kilnd" {
      driver = "raw_exec"

      config {
        command = "/usr/local/libexec/kiln/kilnd-start"
        # --drain-on-term: Nomad has no pre-stop hook, so on SIGTERM
        # kilnd-start drains the host (no new sandboxes, the running ones
        # run out) before it stops kilnd.
        # The node name must be a valid host id ([a-z0-9][a-z0-9-]{0,39},
        # e.g. "kvm-01"): kilnd refuses to start otherwise, so that the id in
        # the hosts file and in the sandbox ids cannot differ.
        args = [
          "--drain-on-term", "--",
          "--host-id", "${node.unique.name}",
          "--listen", "tcp:${NOMAD_ADDR_api}",
          "--tokens", "${NOMAD_SECRETS_DIR}/tokens.json",
          "--state-dir", "/var/lib/kiln/state",
          "--max-sandboxes", "16",
          "--log-json",
        ]
      }

      env {
        TMPDIR          = "/var/lib/kiln/run"
        KILN_HOST       = "tcp:${NOMAD_ADDR_api}"
        KILN_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/admin-token"
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/tokens.json"
        perms       = "0400"
        # kilnd reads its tokens at start only; a restart would end its
        # sandboxes, so a new file waits for the next (drained) restart.
        change_mode = "noop"
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/kilnd" }}{{ .tokens_json }}{{ end }}
        EOT
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/admin-token"
        perms       = "0400"
        change_mode = "noop"
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/kilnd" }}{{ .admin_token }}{{ end }}
        EOT
      }

      # Time for the drain: at least the largest max_timeout_s in the tokens
      # file. The client's max_kill_timeout (30s by default) caps this: raise
      # it in the client config too.
      kill_timeout = "61m"
      kill_signal  = "SIGTERM"

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
