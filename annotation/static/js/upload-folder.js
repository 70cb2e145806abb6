// A folder's files are sent under one field with their paths inside the folder, so the
// QaTa-COV19 layout survives the upload.
document.getElementById("upload-form").addEventListener("submit", (event) => {
  const folder = document.getElementById("id_folder");
  if (!folder.files.length) return;
  const files = document.getElementById("id_files");
  const transfer = new DataTransfer();
  const paths = [];
  for (const file of folder.files) { transfer.items.add(file); paths.push(file.webkitRelativePath || file.name); }
  files.files = transfer.files;
  folder.value = "";
  document.getElementById("id_paths").value = JSON.stringify(paths);
});
