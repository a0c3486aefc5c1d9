# kiln-router: stateless, as many as you like. Its hosts file is rendered
# from the kilnd services registered in Consul (deploy/nomad/kilnd.nomad.hcl)
# and re-read by the router when it changes: no restart, no signal.
#
#   nomad var put nomad/jobs/kiln-router tokens_json=@tokens.json upstream_token=@router-token
#   nomad job run deploy/nomad/kiln-router.nomad.hcl
job "kiln-router" {
  type = "service"

  group "router" {
    count = 2

    network {
      port "api" {
        to = 8400
      }
    }

    service {
      name     = "kiln-router"
      port     = "api"
      provider = "consul"

      check {
        name     = "kiln-router health"
        type     = "http"
        path     = "/v1/health"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "router" {
      # exec: a chroot, runs as nobody; the router needs no privilege.
      driver = "exec"
      user   = "nobody"

      config {
        command = "/usr/local/libexec/kiln/kiln-router"
        args = [
          "--listen", "tcp:0.0.0.0:${NOMAD_PORT_api}",
          "--hosts-file", "${NOMAD_TASK_DIR}/kilnd-hosts",
          "--tokens", "${NOMAD_SECRETS_DIR}/tokens.json",
        ]
      }

      # One line per healthy kilnd: HOSTID URL. A host whose check fails, or
      # whose client is gone, drops out and the router stops placing on it.
      template {
        destination = "local/kilnd-hosts"
        change_mode = "noop"
        data        = <<-EOT
        # rendered by Nomad from the Consul service "kilnd"
        {{ range service "kilnd" }}{{ index .ServiceMeta "host_id" }} http://{{ .Address }}:{{ .Port }}
        {{ end }}
        EOT
      }

      # The tokens file holds only SHA-256s of tokens; readable by nobody.
      template {
        destination = "${NOMAD_SECRETS_DIR}/tokens.json"
        perms       = "0444"
        change_mode = "restart"
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/kiln-router" }}{{ .tokens_json }}{{ end }}
        EOT
      }

      # The router's own token at kilnd (GET /v1/capacity), as environment.
      template {
        destination = "${NOMAD_SECRETS_DIR}/router.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
        KILN_ROUTER_UPSTREAM_TOKEN={{ with nomadVar "nomad/jobs/kiln-router" }}{{ .upstream_token }}{{ end }}
        EOT
      }

      resources {
        cpu    = 200
        memory = 64
      }
    }
  }
}
