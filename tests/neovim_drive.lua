-- Driven by tests/test_neovim.py: headless Neovim, the shipped client config, one completion request.
local out = os.getenv("QS_OUT")
local root = os.getenv("QS_ROOT")
vim.opt.rtp:append(root .. "/lsp/clients/neovim")
local cmd = { os.getenv("QS_PYTHON"), "-m", "runtime.cli", "lsp", "--log-file", out .. ".log" }
for arg in string.gmatch(os.getenv("QS_ARGS") or "", "%S+") do table.insert(cmd, arg) end
require("quicksilver").setup({ cmd = cmd })
vim.cmd("filetype on")
vim.cmd("edit " .. os.getenv("QS_FILE"))
local function client()
  local clients = vim.lsp.buf_get_clients(0)
  for _, c in pairs(clients) do return c end
end
local ok = vim.wait(120000, function()
  local c = client()
  return c ~= nil and c.server_capabilities ~= nil and next(c.server_capabilities) ~= nil
end, 100)
if not ok then
  vim.fn.writefile({ vim.fn.json_encode({ error = "the language server did not start" }) }, out)
  vim.cmd("qa!")
end
-- what the omnifunc (<C-x><C-o>) sends: the position, no completion context
local params = { textDocument = { uri = vim.uri_from_bufnr(0) },
                 position = { line = tonumber(os.getenv("QS_LINE")), character = tonumber(os.getenv("QS_CHAR")) } }
local results = vim.lsp.buf_request_sync(0, "textDocument/completion", params, 120000)
local items = {}
for _, r in pairs(results or {}) do
  if r.result then
    for _, item in ipairs(r.result.items or r.result) do table.insert(items, item) end
  end
end
vim.fn.writefile({ vim.fn.json_encode({ version = vim.version(), items = items }) }, out)
vim.cmd("qa!")
