-- quicksilver for Neovim: ghost-text completions and block edits from `quicksilver lsp`.
--
--   require("quicksilver").setup({})                                -- the shipped model, in-process
--   require("quicksilver").setup({ server = "ws://team-box:8000" }) -- a shared `quicksilver serve`
--
-- Neovim 0.11+: registered with vim.lsp.config / vim.lsp.enable; 0.12 adds inline (ghost-text) completion,
-- turned on here. Older versions (0.7-0.10): the client is started per Python buffer and completions arrive
-- through the LSP omnifunc (<C-x><C-o>). Code actions (Complete block; a verified Repair titled with its change) work in every version
-- through vim.lsp.buf.code_action().
local M = {}

M.defaults = {
  cmd = { "quicksilver", "lsp" },
  filetypes = { "python" },
  server = nil,     -- ws:// URL of a running `quicksilver serve`
  api_key = nil,    -- its API key, if it has one
  inline = true,    -- 0.12+: ghost text
}

local function command(opts)
  local cmd = vim.deepcopy(opts.cmd)
  if opts.server then
    vim.list_extend(cmd, { "--server", opts.server })
  end
  if opts.api_key then
    vim.list_extend(cmd, { "--api-key", opts.api_key })
  end
  return cmd
end

function M.setup(user)
  local opts = vim.tbl_deep_extend("force", M.defaults, user or {})
  local cmd = command(opts)
  if vim.lsp.config and vim.lsp.enable then
    vim.lsp.config("quicksilver", { cmd = cmd, filetypes = opts.filetypes,
                                    root_markers = { ".git", "pyproject.toml", "setup.py" } })
    vim.lsp.enable("quicksilver")
    if opts.inline and vim.lsp.inline_completion then
      vim.lsp.inline_completion.enable(true)
    end
    return
  end
  local client_id = nil
  vim.api.nvim_create_autocmd("FileType", {
    pattern = opts.filetypes,
    callback = function(args)
      if client_id == nil or vim.lsp.get_client_by_id(client_id) == nil then
        client_id = vim.lsp.start_client({ name = "quicksilver", cmd = cmd, root_dir = vim.fn.getcwd() })
      end
      vim.lsp.buf_attach_client(args.buf, client_id)
      vim.api.nvim_buf_set_option(args.buf, "omnifunc", "v:lua.vim.lsp.omnifunc")
    end,
  })
end

return M
