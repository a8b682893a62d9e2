import { defineConfig } from "vitest/config";

// The Tauri shell loads ../ui/dist (embedded at build time); `npm run dev`
// serves the same files on a fixed port for `tauri dev`.
export default defineConfig({
  clearScreen: false,
  server: { port: 1420, strictPort: true, host: "127.0.0.1" },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", sourcemap: false },
  test: { include: ["src/**/*.test.ts"] },
});
