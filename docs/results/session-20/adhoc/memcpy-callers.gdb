set pagination off
break __memmove_avx512_unaligned_erms
commands
silent
printf "size %d\n", $rdx
bt 4
cont
end
cont
