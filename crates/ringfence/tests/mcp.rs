//! `ringfence mcp` driven by the official Python MCP client (`mcp` from PyPI, installed by
//! scripts/test; `RINGFENCE_MCP_PYTHON` names a python that imports it): initialize, list the
//! tools, run a command that writes in the workspace, one that reads `~/.ssh`, one that tries
//! the network, and the file tools at the boundary. Without the client the test is skipped
//! visibly (and fails under RINGFENCE_TEST_STRICT=1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::run_for;

const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

binary, settings, work, home, state = sys.argv[1:6]
calls = json.loads(sys.argv[6])

async def main():
    params = StdioServerParameters(
        command=binary, args=["mcp", "-s", settings], cwd=work,
        env={"HOME": home, "XDG_STATE_HOME": state, "PATH": "/usr/local/bin:/usr/bin:/bin"})
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            info = getattr(init, "serverInfo", None) or getattr(init, "server_info")
            out = {"server": info.name,
                   "tools": sorted(t.name for t in tools.tools)}
            for key, name, args in calls:
                res = await session.call_tool(name, args)
                out[key] = {"text": "".join(c.text for c in res.content if c.type == "text"),
                            "isError": bool(getattr(res, "isError", None)
                                            or getattr(res, "is_error", False))}
            print(json.dumps(out))

asyncio.run(main())
"#;

fn client_python() -> Option<PathBuf> {
    let why = match std::env::var_os("RINGFENCE_MCP_PYTHON").map(PathBuf::from) {
        Some(p) if p.is_file() => return Some(p),
        Some(p) => format!("{}: not a file (RINGFENCE_MCP_PYTHON)", p.display()),
        None => "RINGFENCE_MCP_PYTHON is not set (a python that imports the `mcp` package)".into(),
    };
    common::skip(&why);
    None
}

#[test]
fn an_mcp_client_gets_a_sandboxed_shell() {
    let Some(python) = client_python() else {
        return;
    };
    let (dir, settings) = common::with_settings(
        "mcp",
        r#"{"permissions": {"allow": ["Bash(*)"]},
            "filesystem": {"allowWrite": ["."], "denyRead": ["~/.ssh"]},
            "network": {"allowedDomains": ["allowed.invalid"]}}"#,
    );
    dir.mkdir("work");
    dir.mkdir("home/.ssh");
    dir.write("home/.ssh/id_test", "SECRET-KEY-MATERIAL\n");
    let script = dir.write("client.py", CLIENT);
    let calls = serde_json::json!([
        ["write", "run", {"command": "echo made-inside > out.txt && cat out.txt"}],
        ["secret", "run", {"command": "cat ~/.ssh/id_test; echo status=$?"}],
        ["net", "run", {"command": "curl -s -m 5 -o /dev/null -w '%{http_code}' http://blocked.invalid/; echo"}],
        ["read_secret", "read_file", {"path": dir.s("home/.ssh/id_test")}],
        ["write_rc", "write_file", {"path": ".bashrc", "content": "evil\n"}],
        ["write_ok", "write_file", {"path": "notes.txt", "content": "from the client\n"}],
        ["read_ok", "read_file", {"path": "notes.txt"}],
        ["list", "list_dir", {"path": "."}],
        ["outside", "write_file", {"path": "/etc/ringfence-mcp-test", "content": "x"}],
        ["violations", "violations", {}],
    ]);
    let out = run_for(
        Command::new(python).args([
            script.to_str().unwrap(),
            common::bin().to_str().unwrap(),
            &settings,
            &dir.s("work"),
            &dir.s("home"),
            &dir.s("state"),
            &calls.to_string(),
        ]),
        std::time::Duration::from_secs(120),
    );
    let v: serde_json::Value = serde_json::from_str(out.ok().trim()).unwrap();
    assert_eq!(v["server"], "ringfence");
    assert_eq!(
        v["tools"],
        serde_json::json!(["list_dir", "read_file", "run", "violations", "write_file"])
    );
    let text = |k: &str| v[k]["text"].as_str().unwrap().to_string();
    // A command writes in the workspace, and the file is there on the host.
    assert!(text("write").contains("exit status 0"), "{}", text("write"));
    assert!(text("write").contains("made-inside"), "{}", text("write"));
    assert_eq!(dir.read("work/out.txt"), "made-inside\n");
    // The secret is hidden from commands and from read_file.
    assert!(
        !text("secret").contains("SECRET-KEY-MATERIAL"),
        "{}",
        text("secret")
    );
    assert!(text("secret").contains("status=1"), "{}", text("secret"));
    assert_eq!(v["read_secret"]["isError"], true);
    assert!(!text("read_secret").contains("SECRET-KEY-MATERIAL"));
    // The network: the proxy refuses a host the policy does not list, and the result says so.
    assert!(text("net").contains("403"), "{}", text("net"));
    assert!(
        text("net").contains("deny network blocked.invalid:80"),
        "{}",
        text("net")
    );
    // The file tools are bound by the same rules: a protected name and a path outside the
    // writable roots are refused, a workspace file is written and read back.
    assert_eq!(v["write_rc"]["isError"], true, "{}", text("write_rc"));
    assert!(!dir.path.join("work/.bashrc").exists());
    assert_eq!(v["outside"]["isError"], true, "{}", text("outside"));
    assert!(!std::path::Path::new("/etc/ringfence-mcp-test").exists());
    assert_eq!(v["write_ok"]["isError"], false, "{}", text("write_ok"));
    assert_eq!(dir.read("work/notes.txt"), "from the client\n");
    assert_eq!(text("read_ok"), "from the client\n");
    assert!(text("list").contains("notes.txt"), "{}", text("list"));
    // The session's refusals, from every call.
    let violations = text("violations");
    assert!(
        violations.contains("deny network blocked.invalid:80"),
        "{violations}"
    );
    assert!(violations.contains(".bashrc"), "{violations}");
}
