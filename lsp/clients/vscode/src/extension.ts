// quicksilver for VS Code: starts `quicksilver lsp` (in-process model, or a client of a running server) and hands
// inline completions, completions and code actions (Complete block; a verified Repair titled with its change) to the editor.
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions, TransportKind } from "vscode-languageclient/node";

let client: LanguageClient | undefined;

function serverOptions(): ServerOptions {
  const cfg = vscode.workspace.getConfiguration("quicksilver");
  const args = ["lsp"];
  const url = cfg.get<string>("serverUrl", "");
  const key = cfg.get<string>("apiKey", "");
  const model = cfg.get<string>("model", "");
  if (url) {
    args.push("--server", url);
    if (key) {
      args.push("--api-key", key);
    }
  } else if (model) {
    args.push("--model", model);
  }
  return { command: cfg.get<string>("command", "quicksilver"), args, transport: TransportKind.stdio };
}

async function start(): Promise<void> {
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "python" }, { scheme: "untitled", language: "python" }],
    outputChannelName: "quicksilver",
  };
  client = new LanguageClient("quicksilver", "quicksilver", serverOptions(), clientOptions);
  client.registerProposedFeatures(); // textDocument/inlineCompletion (LSP 3.18)
  await client.start();
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  context.subscriptions.push(
    // an accepted ghost text runs the item's command: tell the server, which logs it (and forwards it when remote)
    vscode.commands.registerCommand("quicksilver/accept", (id: string) =>
      client?.sendNotification("quicksilver/accept", [id])),
    vscode.commands.registerCommand("quicksilver.restart", async () => {
      await client?.stop();
      await start();
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration("quicksilver")) {
        await client?.stop();
        await start();
      }
    }),
  );
  await start();
}

export function deactivate(): Thenable<void> | undefined {
  return client?.stop();
}
